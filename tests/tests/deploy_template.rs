//! The CloudFormation template (`deploy/bucketclone.cfn.json`) and the image
//! (`deploy/Dockerfile`) agree with the code:
//!
//! - every `BUCKETCLONE_*` variable they set is one the program reads, and the settings the
//!   services load from them are the ones intended (names, listen addresses);
//! - the queues are the ones the services open (names, dead-letter queues) with the settings
//!   `bucketclone init` would give them (visibility = the worker's lease, receives, retention,
//!   long polling);
//! - the table has the key schema and indexes of the DynamoDB job store;
//! - the task roles allow exactly the AWS actions of the SDK operations the AWS backends call
//!   at run time (found by reading their sources), and nothing more;
//! - workers stop after their drain time, scale on backlog per task, and the alarms watch the
//!   dead-letter queues and the segment queue's age.
//!
//! No AWS: the template is read as JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bucketclone::settings::{CONFIG_ENV, ENV_PREFIX, Overrides, Settings};
use serde_json::{Value, json};
use shared::backend::aws::dynamo::schema;
use shared::backend::aws::sqs::{DLQ_RETENTION_SECS, DLQ_SUFFIX, MAX_WAIT_SECS};

/// The stack's `Name` parameter in these tests (the template's `${Name}`).
const NAME: &str = "teststack";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn template() -> Value {
    serde_json::from_str(&read("deploy/bucketclone.cfn.json")).expect("the template is JSON")
}

fn resource<'a>(t: &'a Value, logical: &str, kind: &str) -> &'a Value {
    let r = &t["Resources"][logical];
    assert_eq!(r["Type"], kind, "resource {logical}");
    &r["Properties"]
}

/// A template string: a literal, or an `Fn::Sub` with `${Name}` (the only substitution the
/// names use) replaced by [`NAME`], or `Ref AWS::Region`, or a `Ref` to a parameter (its
/// default).
fn string(v: &Value) -> String {
    if let Some(s) = v.as_str() {
        return s.to_string();
    }
    if let Some(n) = v.as_u64() {
        return n.to_string();
    }
    if let Some(p) = v["Ref"].as_str()
        && let Some(default) = template()["Parameters"][p].get("Default")
    {
        return string(default);
    }
    if let Some(s) = v["Fn::Sub"].as_str() {
        assert!(!s.replace("${Name}", "").contains("${"), "unexpected substitution in {s}");
        return s.replace("${Name}", NAME);
    }
    if v["Ref"] == "AWS::Region" {
        return "eu-west-1".into();
    }
    panic!("not a string the test can resolve: {v}")
}

fn number(v: &Value) -> u64 {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or_else(|| panic!("not a number: {v}"))
}

fn container<'a>(t: &'a Value, role: &str) -> &'a Value {
    let defs = resource(t, &format!("{role}TaskDefinition"), "AWS::ECS::TaskDefinition")["ContainerDefinitions"]
        .as_array()
        .expect("container definitions");
    assert_eq!(defs.len(), 1, "{role}: one container");
    &defs[0]
}

/// The environment a role's container gets from the template.
fn container_env(t: &Value, role: &str) -> Vec<(String, String)> {
    let env = container(t, role)["Environment"].as_array().expect("Environment");
    env.iter().map(|e| (string(&e["Name"]), string(&e["Value"]))).collect()
}

/// The `ENV` of the image (deploy/Dockerfile), `KEY=VALUE` pairs over continued lines.
fn image_env() -> Vec<(String, String)> {
    let dockerfile = read("deploy/Dockerfile").replace("\\\n", " ");
    let mut out = Vec::new();
    for line in dockerfile.lines().filter_map(|l| l.trim().strip_prefix("ENV ")) {
        for pair in line.split_whitespace() {
            let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("ENV {pair}: use KEY=VALUE"));
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

/// The settings the services load with `env` as their whole environment (and no flags).
fn settings(env: &[(String, String)]) -> Settings {
    Settings::load_with_env(&Overrides::default(), Some(env.to_vec())).expect("the settings load")
}

/// Variables read outside the settings loader (logging, the configuration file).
fn read_elsewhere(var: &str) -> bool {
    [bucketclone::LOG_ENV, bucketclone::LOG_FORMAT_ENV, CONFIG_ENV].contains(&var)
}

/// Whether the settings loader reads `var`: set to a value no key has by default, the
/// settings either change or are refused. (Unknown keys are silently ignored by the loader,
/// which is why a misspelt variable in a deployment is worth a test.)
fn settings_read(var: &str) -> bool {
    let base = format!("{:?}", settings(&[]));
    match Settings::load_with_env(&Overrides::default(), Some(vec![(var.to_string(), "zz-sentinel-7".into())])) {
        Ok(s) => format!("{s:?}") != base,
        Err(_) => true,
    }
}

fn assert_program_reads(env: &[(String, String)], whose: &str) {
    for (k, _) in env {
        if k.starts_with(&format!("{ENV_PREFIX}_")) {
            assert!(read_elsewhere(k) || settings_read(k), "{whose} sets {k}, which bucketclone does not read");
        }
    }
}

#[test]
fn the_sentinel_check_tells_read_variables_from_misspelt_ones() {
    assert!(settings_read("BUCKETCLONE_WORKER__HTTP_ADDR") && settings_read("BUCKETCLONE_NAME"));
    assert!(settings_read("BUCKETCLONE_WORKER__LEASE_SECS"), "a refused value counts as read");
    assert!(!settings_read("BUCKETCLONE_WORKER_HTTP_ADDR"), "one underscore is not a nested key");
    assert!(!settings_read("BUCKETCLONE_HTTP_ADDRESS"));
}

#[test]
fn the_containers_and_the_image_set_only_variables_the_program_reads() {
    let t = template();
    let image = image_env();
    assert_program_reads(&image, "deploy/Dockerfile");
    let s = settings(&image);
    assert_eq!(s.http_addr, "0.0.0.0:8080", "the image's coordinator listens beyond the container");
    assert_eq!(s.worker.http_addr, "0.0.0.0:9090", "the image's worker serves /metrics beyond the container");

    for (role, port) in [("Coordinator", 8080), ("Worker", 9090)] {
        let env = container_env(&t, role);
        assert_program_reads(&env, &format!("the template's {role}"));
        // The container's environment comes on top of the image's.
        let mut all = image.clone();
        all.retain(|(k, _)| !env.iter().any(|(e, _)| e == k));
        all.extend(env);
        let s = settings(&all);
        assert_eq!(s.name, NAME, "{role}: BUCKETCLONE_NAME is the stack's Name");
        let listen = if role == "Coordinator" { &s.http_addr } else { &s.worker.http_addr };
        assert_eq!(listen.rsplit(':').next(), Some(port.to_string().as_str()), "{role} listens on {listen}");
        let mapped: Vec<u64> = container(&t, role)["PortMappings"]
            .as_array()
            .expect("PortMappings")
            .iter()
            .map(|p| number(&p["ContainerPort"]))
            .collect();
        assert_eq!(mapped, [port], "{role}: the port mapping is the listen port");
    }
}

#[test]
fn the_containers_run_the_service_subcommands() {
    let t = template();
    for role in ["Coordinator", "Worker"] {
        let cmd: Vec<String> = container(&t, role)["Command"].as_array().expect("Command").iter().map(string).collect();
        assert_eq!(cmd, [role.to_lowercase()]);
        let help = std::process::Command::new(env!("CARGO_BIN_EXE_bucketclone-under-test"))
            .args(&cmd)
            .arg("--help")
            .output()
            .expect("run the CLI");
        assert!(help.status.success(), "`bucketclone {} --help` fails: the CLI has no such subcommand", cmd[0]);
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_bucketclone-under-test"))
        .args(["coordinatr", "--help"])
        .output()
        .expect("run the CLI");
    assert!(!bad.status.success(), "an unknown subcommand is refused");
}

#[test]
fn the_queues_are_the_ones_the_services_open_set_up_as_init_would() {
    let t = template();
    let s = settings(&container_env(&t, "Worker"));
    for (logical, name) in [("RequestsQueue", s.requests_queue()), ("SegmentsQueue", s.segments_queue())] {
        let q = resource(&t, logical, "AWS::SQS::Queue");
        let dlq_logical = format!("{logical}Dlq");
        let dlq = resource(&t, &dlq_logical, "AWS::SQS::Queue");
        assert_eq!(string(&q["QueueName"]), name, "{logical}");
        assert_eq!(string(&dlq["QueueName"]), format!("{name}{DLQ_SUFFIX}"), "{logical}'s dead-letter queue");
        // Receives always name the lease as their visibility timeout; the queue's default
        // is what `init` sets (the lease by default).
        assert_eq!(number(&q["VisibilityTimeout"]), u64::from(s.queue.visibility_secs), "{logical}");
        assert_eq!(number(&q["MessageRetentionPeriod"]), u64::from(s.queue.retention_secs), "{logical}");
        assert_eq!(number(&q["ReceiveMessageWaitTimeSeconds"]), MAX_WAIT_SECS, "{logical}");
        assert_eq!(number(&dlq["MessageRetentionPeriod"]), u64::from(DLQ_RETENTION_SECS), "{logical}");
        let redrive = &q["RedrivePolicy"];
        assert_eq!(redrive["deadLetterTargetArn"], json!({"Fn::GetAtt": [dlq_logical, "Arn"]}), "{logical}");
        assert_eq!(number(&redrive["maxReceiveCount"]), u64::from(s.queue.max_receives), "{logical}");
    }
    let segments = resource(&t, "SegmentsQueue", "AWS::SQS::Queue");
    assert_eq!(
        number(&segments["VisibilityTimeout"]),
        s.worker.lease_secs,
        "a segment message's visibility timeout is the worker's lease"
    );
}

#[test]
fn the_table_has_the_job_stores_keys_and_indexes() {
    let t = template();
    let s = settings(&container_env(&t, "Coordinator"));
    let table = resource(&t, "JobsTable", "AWS::DynamoDB::Table");
    assert_eq!(string(&table["TableName"]), s.table());
    assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
    let keys = |v: &Value| -> Vec<(String, String)> {
        v.as_array().expect("KeySchema").iter().map(|k| (string(&k["AttributeName"]), string(&k["KeyType"]))).collect()
    };
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(keys(&table["KeySchema"]), [pair(schema::PARTITION_KEY, "HASH"), pair(schema::SORT_KEY, "RANGE")]);
    let attrs: BTreeSet<(String, String)> = table["AttributeDefinitions"]
        .as_array()
        .expect("AttributeDefinitions")
        .iter()
        .map(|a| (string(&a["AttributeName"]), string(&a["AttributeType"])))
        .collect();
    let want: BTreeSet<_> = [
        pair(schema::PARTITION_KEY, "S"),
        pair(schema::SORT_KEY, "S"),
        pair(schema::JOBS_INDEX_KEY, "S"),
        pair(schema::RUNNING_INDEX_KEY, "S"),
        pair(schema::CREATED_MS, "N"),
    ]
    .into();
    assert_eq!(attrs, want);
    let indexes: BTreeMap<String, (Vec<(String, String)>, String)> = table["GlobalSecondaryIndexes"]
        .as_array()
        .expect("GlobalSecondaryIndexes")
        .iter()
        .map(|i| (string(&i["IndexName"]), (keys(&i["KeySchema"]), string(&i["Projection"]["ProjectionType"]))))
        .collect();
    let index = |key: &str| (vec![pair(key, "HASH"), pair(schema::CREATED_MS, "RANGE")], "KEYS_ONLY".to_string());
    let want: BTreeMap<_, _> = [
        (schema::JOBS_INDEX.to_string(), index(schema::JOBS_INDEX_KEY)),
        (schema::RUNNING_INDEX.to_string(), index(schema::RUNNING_INDEX_KEY)),
    ]
    .into();
    assert_eq!(indexes, want);
    // Settled jobs expire on the attribute the store writes, after the retention the
    // services are given (the settings check it outlasts the queues' retention).
    assert_eq!(table["TimeToLiveSpecification"], json!({"AttributeName": schema::EXPIRES_AT, "Enabled": true}));
    let worker = settings(&container_env(&t, "Worker"));
    assert_eq!(s.table.retention_days, worker.table.retention_days, "one retention for both services");
    let p = &t["Parameters"]["JobRetentionDays"];
    let longest = u64::from(s.queue.retention_secs.max(DLQ_RETENTION_SECS));
    assert!(number(&p["MinValue"]) * 86_400 > longest, "the template's minimum is valid");
}

/// How the deployed services use an SDK operation.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Use {
    /// Coordinator or worker: the task roles must allow it.
    Run,
    /// `bucketclone init` only (creating the resources the template creates): not allowed.
    Init,
    /// Test and benchmark helpers only (`S3Store::create_bucket`): not allowed.
    Tests,
}

/// Every SDK operation the AWS backends call, how, and the IAM actions it needs. Copies
/// carry tags over (S3's COPY tagging directive, or `x-amz-tagging` on uploads), which takes
/// s3:GetObjectTagging on the source and s3:PutObjectTagging on the destination; HeadBucket
/// is authorised by s3:ListBucket, HeadObject by s3:GetObject, SendMessageBatch by
/// sqs:SendMessage, multipart calls by s3:PutObject.
const OPERATIONS: &[(&str, &str, Use, &[&str])] = &[
    ("s3", "abort_multipart_upload", Use::Run, &["s3:AbortMultipartUpload"]),
    ("s3", "complete_multipart_upload", Use::Run, &["s3:PutObject"]),
    ("s3", "copy_object", Use::Run, &["s3:GetObject", "s3:GetObjectTagging", "s3:PutObject", "s3:PutObjectTagging"]),
    ("s3", "create_bucket", Use::Tests, &["s3:CreateBucket"]),
    ("s3", "create_multipart_upload", Use::Run, &["s3:PutObject", "s3:PutObjectTagging"]),
    ("s3", "delete_object", Use::Run, &["s3:DeleteObject"]),
    ("s3", "get_object", Use::Run, &["s3:GetObject"]),
    ("s3", "get_object_tagging", Use::Run, &["s3:GetObjectTagging"]),
    ("s3", "head_bucket", Use::Run, &["s3:ListBucket"]),
    ("s3", "head_object", Use::Run, &["s3:GetObject"]),
    ("s3", "list_objects_v2", Use::Run, &["s3:ListBucket"]),
    ("s3", "put_object", Use::Run, &["s3:PutObject", "s3:PutObjectTagging"]),
    ("s3", "restore_object", Use::Run, &["s3:RestoreObject"]),
    ("s3", "upload_part", Use::Run, &["s3:PutObject"]),
    ("s3", "upload_part_copy", Use::Run, &["s3:GetObject", "s3:PutObject"]),
    ("sqs", "change_message_visibility", Use::Run, &["sqs:ChangeMessageVisibility"]),
    ("sqs", "create_queue", Use::Init, &["sqs:CreateQueue"]),
    ("sqs", "delete_message", Use::Run, &["sqs:DeleteMessage"]),
    ("sqs", "get_queue_attributes", Use::Run, &["sqs:GetQueueAttributes"]),
    ("sqs", "get_queue_url", Use::Run, &["sqs:GetQueueUrl"]),
    ("sqs", "receive_message", Use::Run, &["sqs:ReceiveMessage"]),
    ("sqs", "send_message_batch", Use::Run, &["sqs:SendMessage"]),
    ("sqs", "set_queue_attributes", Use::Init, &["sqs:SetQueueAttributes"]),
    ("dynamodb", "batch_get_item", Use::Run, &["dynamodb:BatchGetItem"]),
    ("dynamodb", "batch_write_item", Use::Run, &["dynamodb:BatchWriteItem"]),
    ("dynamodb", "create_table", Use::Init, &["dynamodb:CreateTable"]),
    ("dynamodb", "describe_table", Use::Init, &["dynamodb:DescribeTable"]),
    ("dynamodb", "describe_time_to_live", Use::Init, &["dynamodb:DescribeTimeToLive"]),
    ("dynamodb", "get_item", Use::Run, &["dynamodb:GetItem"]),
    ("dynamodb", "put_item", Use::Run, &["dynamodb:PutItem"]),
    ("dynamodb", "query", Use::Run, &["dynamodb:Query"]),
    // Authorised per action inside the transaction: see TRANSACTION_ACTIONS.
    ("dynamodb", "transact_write_items", Use::Run, &[]),
    ("dynamodb", "update_item", Use::Run, &["dynamodb:UpdateItem"]),
    ("dynamodb", "update_table", Use::Init, &["dynamodb:UpdateTable"]),
    ("dynamodb", "update_time_to_live", Use::Init, &["dynamodb:UpdateTimeToLive"]),
];

/// TransactWriteItems needs the IAM action of each kind of item it contains.
const TRANSACTION_ACTIONS: &[(&str, &str)] = &[
    ("put", "dynamodb:PutItem"),
    ("update", "dynamodb:UpdateItem"),
    ("delete", "dynamodb:DeleteItem"),
    ("condition_check", "dynamodb:ConditionCheckItem"),
];

/// What S3 needs of KMS for the caller when objects are encrypted with a KMS key.
const KMS_THROUGH_S3: &[&str] = &["kms:Decrypt", "kms:GenerateDataKey"];

/// The files where `Use::Init` and `Use::Tests` operations may be called.
const SETUP_FILES: &[&str] = &["sqs/setup.rs", "dynamo/table.rs", "s3.rs"];

/// Every `.rs` file under `dir`, without its `#[cfg(test)]` module (each file's tests come last).
fn rust_sources(dir: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root().join(dir)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let src = std::fs::read_to_string(&p).expect("source");
                let code = src.split("#[cfg(test)]").next().unwrap_or_default().to_string();
                let rel = p.strip_prefix(root().join(dir)).expect("under dir").to_string_lossy().replace('\\', "/");
                out.push((rel, code));
            }
        }
    }
    out.sort();
    assert!(!out.is_empty(), "no sources under {dir}");
    out
}

/// Methods called as `<marker><ident>()` in `code` with whitespace removed.
fn calls_after(code: &str, marker: &str) -> Vec<String> {
    methods_after(code, marker, "()")
}

/// Identifiers following `marker` and followed by `then` in `code` with whitespace removed.
fn methods_after(code: &str, marker: &str, then: &str) -> Vec<String> {
    let flat: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    flat.match_indices(marker)
        .filter_map(|(i, _)| {
            let rest = &flat[i + marker.len()..];
            let ident: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            (!ident.is_empty() && rest[ident.len()..].starts_with(then)).then_some(ident)
        })
        .collect()
}

/// (service, operation) -> the files calling it, from the AWS backends' sources: calls on a
/// `client` or any field named `..._client` (the SDK clients of the file's service) or on
/// `ctx.s3()`, `.sqs()`, `.dynamodb()`.
fn sdk_calls() -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut out: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (file, code) in rust_sources("shared/src/backend/aws") {
        let service = if file.starts_with("s3") {
            Some("s3")
        } else if file.starts_with("sqs") {
            Some("sqs")
        } else if file.starts_with("dynamo") {
            Some("dynamodb")
        } else {
            None
        };
        let mut found: Vec<(String, String)> = Vec::new();
        for svc in ["s3", "sqs", "dynamodb"] {
            found.extend(calls_after(&code, &format!(".{svc}().")).into_iter().map(|op| (svc.to_string(), op)));
        }
        for op in calls_after(&code, "client.") {
            let svc = service.unwrap_or_else(|| panic!("{file}: a client call ({op}) outside a service's module"));
            // Client methods that are not operations.
            if !["clone", "config"].contains(&op.as_str()) {
                found.push((svc.to_string(), op));
            }
        }
        for k in found {
            out.entry(k).or_default().insert(file.clone());
        }
    }
    out
}

/// The IAM actions the deployed coordinator and workers need, from the sources.
fn required_actions() -> BTreeSet<String> {
    let calls = sdk_calls();
    let table: BTreeMap<(String, String), (Use, &[&str])> =
        OPERATIONS.iter().map(|(s, o, u, a)| ((s.to_string(), o.to_string()), (*u, *a))).collect();
    let called: BTreeSet<_> = calls.keys().cloned().collect();
    let mapped: BTreeSet<_> = table.keys().cloned().collect();
    assert_eq!(
        called.difference(&mapped).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "operations the code calls that OPERATIONS does not map to IAM actions: add them (and to the template)"
    );
    assert_eq!(
        mapped.difference(&called).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "operations in OPERATIONS the code no longer calls: remove them (and from the template)"
    );
    let mut actions = BTreeSet::new();
    for (k, files) in &calls {
        let (how, acts) = table[k];
        if how == Use::Run {
            actions.extend(acts.iter().map(|a| a.to_string()));
        } else {
            let elsewhere: Vec<_> = files.iter().filter(|f| !SETUP_FILES.contains(&f.as_str())).collect();
            assert!(elsewhere.is_empty(), "{k:?} is set-up only, yet called in {elsewhere:?}");
        }
    }
    // Items of a TransactWriteItems call.
    let mut kinds = 0;
    for (file, code) in rust_sources("shared/src/backend/aws/dynamo") {
        for kind in methods_after(&code, "TransactWriteItem::builder().", "(") {
            kinds += 1;
            let (_, a) = TRANSACTION_ACTIONS
                .iter()
                .find(|(k, _)| *k == kind)
                .unwrap_or_else(|| panic!("{file}: a transaction item of kind {kind} not in TRANSACTION_ACTIONS"));
            actions.insert(a.to_string());
        }
    }
    let transacts = calls.contains_key(&("dynamodb".to_string(), "transact_write_items".to_string()));
    assert!(!transacts || kinds > 0, "transactions are written, yet no transaction item was found");
    // SSE-KMS: S3 asks KMS on the caller's behalf, to decrypt what a copy or a read takes
    // from a KMS-encrypted source (and a multipart upload's parts), and for a data key for
    // what it writes under a KMS key.
    if rust_sources("shared/src/backend/aws").iter().any(|(_, code)| code.contains("set_ssekms_key_id(")) {
        actions.extend(KMS_THROUGH_S3.iter().map(|a| a.to_string()));
    }
    // Scale-in protection through the ECS agent (PUT .../task-protection/v1/state).
    let protection = read("worker/src/protection.rs");
    let protection = protection.split("#[cfg(test)]").next().unwrap_or_default();
    if protection.contains("task-protection/v1/state") {
        assert!(protection.contains("\"PUT "), "the agent's task protection: PUT expected");
        actions.insert("ecs:UpdateTaskProtection".into());
        if protection.contains("\"GET ") {
            actions.insert("ecs:GetTaskProtection".into());
        }
    }
    actions
}

/// The `Allow`ed actions of a task role: its inline policies and its managed policies
/// defined in the template.
fn role_actions(t: &Value, role: &str) -> BTreeSet<String> {
    let props = resource(t, role, "AWS::IAM::Role");
    let mut docs: Vec<&Value> =
        props["Policies"].as_array().into_iter().flatten().map(|p| &p["PolicyDocument"]).collect();
    for m in props["ManagedPolicyArns"].as_array().into_iter().flatten() {
        let logical = m["Ref"].as_str().unwrap_or_else(|| panic!("{role}: managed policy {m} not from the template"));
        docs.push(&resource(t, logical, "AWS::IAM::ManagedPolicy")["PolicyDocument"]);
    }
    let mut out = BTreeSet::new();
    for st in docs.iter().flat_map(|d| d["Statement"].as_array().expect("Statement")) {
        // A statement present only when a condition holds: counted as granted.
        let st = match st.get("Fn::If") {
            Some(branches) => {
                assert_eq!(branches[2], json!({"Ref": "AWS::NoValue"}), "{role}: a conditional statement or none");
                &branches[1]
            }
            None => st,
        };
        assert_eq!(st["Effect"], "Allow", "{role}");
        assert_ne!(st["Resource"], "*", "{role}: no action on every resource");
        let actions = match &st["Action"] {
            Value::String(a) => vec![a.clone()],
            Value::Array(a) => a.iter().map(string).collect(),
            other => panic!("{role}: Action {other}"),
        };
        for a in actions {
            assert!(!a.contains('*'), "{role}: wildcard action {a}");
            out.insert(a);
        }
    }
    out
}

#[test]
fn the_task_roles_allow_exactly_the_calls_the_code_makes() {
    let t = template();
    let required = required_actions();
    assert!(required.contains("s3:PutObject") && required.contains("sqs:ReceiveMessage"), "the scan finds calls");
    assert!(!required.contains("sqs:CreateQueue"), "set-up operations are not the services'");
    let coordinator = role_actions(&t, "CoordinatorTaskRole");
    let worker = role_actions(&t, "WorkerTaskRole");
    let granted: BTreeSet<String> = coordinator.union(&worker).cloned().collect();
    assert_eq!(
        granted.difference(&required).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "the task roles allow actions the code never needs"
    );
    assert_eq!(
        required.difference(&granted).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "the code calls operations no task role allows"
    );
    // Workers do every copy; the coordinator only checks and lists buckets (HeadBucket on
    // intake, ListObjectsV2 for GET /jobs/{id}/stats), besides the queues and the table.
    let s3 =
        |set: &BTreeSet<String>| -> BTreeSet<String> { set.iter().filter(|a| a.starts_with("s3:")).cloned().collect() };
    let listing: BTreeSet<String> = OPERATIONS
        .iter()
        .filter(|(s, o, _, _)| *s == "s3" && ["head_bucket", "list_objects_v2"].contains(o))
        .flat_map(|(_, _, _, a)| a.iter().map(|a| a.to_string()))
        .collect();
    assert_eq!(s3(&coordinator), listing, "the coordinator reads no object and writes none");
    assert_eq!(s3(&worker), s3(&required), "workers copy, verify and (in move mode) delete");
    assert!(!coordinator.contains("ecs:UpdateTaskProtection"), "only workers protect their tasks");
    // KMS: only the workers, only on the keys the stack names, only through S3, and only
    // when keys are named at all.
    let kms =
        |set: &BTreeSet<String>| -> Vec<String> { set.iter().filter(|a| a.starts_with("kms:")).cloned().collect() };
    assert_eq!(kms(&worker), KMS_THROUGH_S3, "the workers' KMS actions");
    assert!(kms(&coordinator).is_empty(), "the coordinator reads and writes no object");
    let statements = &resource(&t, "WorkerTaskRole", "AWS::IAM::Role")["Policies"][0]["PolicyDocument"]["Statement"];
    let kms_statement = statements
        .as_array()
        .unwrap()
        .iter()
        .find_map(|s| s.get("Fn::If").filter(|b| b[1]["Sid"] == "KmsKeysThroughS3"))
        .expect("a KMS statement, present only when keys are given");
    assert_eq!(kms_statement[0], "HasKmsKeys");
    assert_eq!(
        t["Conditions"]["HasKmsKeys"],
        json!({"Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "KmsKeyArns"}]}, ""]}]})
    );
    assert_eq!(kms_statement[1]["Resource"], json!({"Ref": "KmsKeyArns"}));
    assert_eq!(
        kms_statement[1]["Condition"],
        json!({"StringEquals": {"kms:ViaService": {"Fn::Sub": "s3.${AWS::Region}.amazonaws.com"}}})
    );
    for svc in ["sqs:", "dynamodb:"] {
        let of = |set: &BTreeSet<String>| -> BTreeSet<String> {
            set.iter().filter(|a| a.starts_with(svc)).cloned().collect()
        };
        assert_eq!(of(&coordinator), of(&required), "the coordinator's {svc} actions");
        assert_eq!(of(&worker), of(&required), "the workers' {svc} actions");
    }
}

#[test]
fn the_service_start_up_creates_nothing() {
    // The template creates the queues and the table: the services must only open them (the
    // roles have no Create* actions). `ensure` is reached from `bucketclone init` alone.
    let service = read("cli/src/service.rs");
    let start = service.find("pub async fn init(").expect("init");
    let end = start + service[start..].find("\n}\n").expect("end of init");
    let rest = format!("{}{}", &service[..start], &service[end..]);
    assert!(service[start..end].contains("ensure"), "init ensures the resources");
    assert!(!rest.contains("ensure"), "a service path outside init creates resources");
    for dir in ["coordinator/src", "worker/src"] {
        for (file, code) in rust_sources(dir) {
            assert!(
                !code.contains("ensure_table") && !code.contains("SqsQueue::ensure"),
                "{dir}/{file} creates resources"
            );
        }
    }
}

#[test]
fn workers_drain_before_being_stopped_and_scale_on_backlog_per_task() {
    let t = template();
    let s = settings(&container_env(&t, "Worker"));
    let stop = number(&container(&t, "Worker")["StopTimeout"]);
    assert!(stop > s.worker.drain_secs, "StopTimeout {stop} s must exceed the drain time {} s", s.worker.drain_secs);
    assert!(stop <= 120, "Fargate's StopTimeout is at most 120 s");

    let cluster = resource(&t, "Cluster", "AWS::ECS::Cluster");
    let insights = json!([{"Name": "containerInsights", "Value": "enabled"}]);
    assert_eq!(cluster["ClusterSettings"], insights, "RunningTaskCount comes from Container Insights");

    let policy = resource(&t, "WorkerBacklogScaling", "AWS::ApplicationAutoScaling::ScalingPolicy");
    assert_eq!(policy["PolicyType"], "TargetTrackingScaling");
    let target = resource(&t, "WorkerScalableTarget", "AWS::ApplicationAutoScaling::ScalableTarget");
    assert_eq!(target["ResourceId"], json!({"Fn::Sub": "service/${Cluster}/${WorkerService.Name}"}));
    let metrics = policy["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]["Metrics"]
        .as_array()
        .expect("metric math");
    let id_of = |namespace: &str, metric: &str, dimension: (&str, Value)| -> String {
        let found: Vec<&Value> = metrics
            .iter()
            .filter(|m| {
                let m = &m["MetricStat"]["Metric"];
                m["Namespace"] == namespace
                    && m["MetricName"] == metric
                    && m["Dimensions"]
                        .as_array()
                        .is_some_and(|d| d.iter().any(|d| d["Name"] == dimension.0 && d["Value"] == dimension.1))
            })
            .collect();
        assert_eq!(found.len(), 1, "one {namespace} {metric} of {dimension:?}");
        string(&found[0]["Id"])
    };
    let queue = ("QueueName", json!({"Fn::GetAtt": ["SegmentsQueue", "QueueName"]}));
    let visible = id_of("AWS/SQS", "ApproximateNumberOfMessagesVisible", queue.clone());
    let in_flight = id_of("AWS/SQS", "ApproximateNumberOfMessagesNotVisible", queue);
    let tasks = id_of(
        "ECS/ContainerInsights",
        "RunningTaskCount",
        ("ServiceName", json!({"Fn::GetAtt": ["WorkerService", "Name"]})),
    );
    let returned: Vec<&Value> = metrics.iter().filter(|m| m["ReturnData"] == true).collect();
    assert_eq!(returned.len(), 1, "one returned expression");
    assert_eq!(string(&returned[0]["Expression"]), format!("({visible} + {in_flight}) / {tasks}"));
}

#[test]
fn alarms_watch_the_dead_letter_queues_and_the_segment_queues_age() {
    let t = template();
    let alarms: Vec<&Value> = t["Resources"]
        .as_object()
        .expect("Resources")
        .values()
        .filter(|r| r["Type"] == "AWS::CloudWatch::Alarm")
        .map(|r| &r["Properties"])
        .collect();
    let on = |queue: &str, metric: &str| -> Vec<&&Value> {
        alarms
            .iter()
            .filter(|a| {
                a["Namespace"] == "AWS/SQS"
                    && a["MetricName"] == metric
                    && a["Dimensions"] == json!([{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}])
            })
            .collect()
    };
    for dlq in ["RequestsQueueDlq", "SegmentsQueueDlq"] {
        let a = on(dlq, "ApproximateNumberOfMessagesVisible");
        assert_eq!(a.len(), 1, "an alarm on {dlq}");
        assert_eq!((number(&a[0]["Threshold"]), &a[0]["ComparisonOperator"]), (0, &json!("GreaterThanThreshold")));
    }
    assert_eq!(on("SegmentsQueue", "ApproximateAgeOfOldestMessage").len(), 1, "an alarm on the segments' age");
}

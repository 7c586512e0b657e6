//! `--include` and `--exclude`, in the order given: with `aws s3 sync` semantics the last
//! matching filter decides, so the order across the two flags matters, and clap keeps each
//! flag's values apart. [`ordered`] merges them back by their positions on the command line.

use clap::{ArgMatches, Args};
use shared::filter::Filter;

/// Filters of a job (or of `stats`), merged in command-line order by [`ordered`].
#[derive(Args, Clone, Default)]
#[command(next_help_heading = "Filters (aws s3 sync semantics)")]
pub struct FilterArgs {
    /// Keep keys matching PATTERN (relative to the location; `*` crosses `/`). With
    /// --exclude, the last filter that matches a key decides. Repeatable.
    #[arg(long, value_name = "PATTERN")]
    include: Vec<String>,
    /// Leave out keys matching PATTERN: not copied, verified, counted or deleted, on either
    /// side. Repeatable.
    #[arg(long, value_name = "PATTERN")]
    exclude: Vec<String>,
}

/// The filters of the innermost subcommand in `m`, in the order they were given.
pub fn ordered(m: &ArgMatches) -> Vec<Filter> {
    let mut m = m;
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
    }
    let mut all: Vec<(usize, Filter)> = Vec::new();
    for (id, make) in [("include", Filter::Include as fn(String) -> Filter), ("exclude", Filter::Exclude)] {
        let Ok(Some(values)) = m.try_get_many::<String>(id) else { continue };
        let indices = m.indices_of(id).into_iter().flatten();
        all.extend(indices.zip(values.cloned().map(make)));
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, f)| f).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        f: FilterArgs,
    }

    #[test]
    fn filters_keep_their_order_across_both_flags() {
        let m = T::command().get_matches_from(["t", "--exclude", "*", "--include", "*.log", "--exclude", "tmp/*"]);
        let want = vec![Filter::Exclude("*".into()), Filter::Include("*.log".into()), Filter::Exclude("tmp/*".into())];
        assert_eq!(ordered(&m), want);
        let m = T::command().get_matches_from(["t"]);
        assert!(ordered(&m).is_empty());
    }
}

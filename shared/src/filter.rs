//! Include and exclude filters with `aws s3 sync` semantics.
//!
//! A job's filters are an ordered list of `include` and `exclude` glob patterns, matched
//! against each key relative to its location (the source's prefix or directory on one
//! side, the destination's on the other). Every key is included unless a filter matches
//! it, and of the filters that match, the **last one decides**: `--exclude '*'
//! --include '*.log'` keeps only the logs, `--include '*.log' --exclude '*'` keeps nothing.
//!
//! Patterns are Python's `fnmatch`, as the AWS CLI uses it: `*` matches any run of
//! characters **including `/`**, `?` any one character, `[abc]`, `[a-z]` and `[!abc]` one
//! character of (or not of) a set; a `[` without its `]` is an ordinary character. Matching
//! is case-sensitive and by Unicode character.
//!
//! The invariant the engine relies on: a key the filters leave out is not part of the job
//! on either side. It is not copied, not counted, not verified, never "extra" in the
//! destination, and never deleted by a move. [`KeyFilter::admits`] is the only question the
//! engine asks; the property tests below prove the matcher agrees with fnmatch's recursive
//! definition.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One filter of a job, in the order given. Serialised as `{"include": "*.log"}` or
/// `{"exclude": "tmp/*"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    Include(String),
    Exclude(String),
}

impl Filter {
    fn pattern(&self) -> &str {
        match self {
            Filter::Include(p) | Filter::Exclude(p) => p,
        }
    }
}

/// Most filters a job may carry (each key is matched against every one).
pub const MAX_FILTERS: usize = 100;

/// Checks a job's filters: at most [`MAX_FILTERS`], none empty.
pub fn validate(filters: &[Filter]) -> Result<()> {
    if filters.len() > MAX_FILTERS {
        return Err(Error::invalid(format!("{} filters: at most {MAX_FILTERS} are allowed", filters.len())));
    }
    if let Some(f) = filters.iter().find(|f| f.pattern().is_empty()) {
        let flag = match f {
            Filter::Include(_) => "include",
            Filter::Exclude(_) => "exclude",
        };
        return Err(Error::invalid(format!("an {flag} filter with an empty pattern matches nothing; leave it out")));
    }
    Ok(())
}

/// A job's filters, compiled: answers whether a relative key is part of the job.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    rules: Vec<(bool, Glob)>,
}

impl KeyFilter {
    pub fn new(filters: &[Filter]) -> Self {
        let rules = filters.iter().map(|f| (matches!(f, Filter::Include(_)), Glob::new(f.pattern()))).collect();
        KeyFilter { rules }
    }

    /// True when the filters keep `rel_key`: the last filter that matches it is an
    /// include, or none matches.
    pub fn admits(&self, rel_key: &str) -> bool {
        self.rules.iter().rev().find(|(_, g)| g.matches(rel_key)).is_none_or(|(include, _)| *include)
    }

    /// True when there are no filters (every key is kept).
    pub fn keeps_all(&self) -> bool {
        self.rules.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `?`
    Any,
    /// `*`
    Star,
    /// `[...]`: negated, then single characters and inclusive ranges.
    Set(bool, Vec<(char, char)>),
}

/// One compiled fnmatch pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Glob(Vec<Token>);

impl Glob {
    fn new(pattern: &str) -> Self {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    // Consecutive stars match what one does.
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::Any);
                    i += 1;
                }
                '[' => match parse_set(&chars, i) {
                    Some((set, next)) => {
                        tokens.push(set);
                        i = next;
                    }
                    None => {
                        tokens.push(Token::Char('['));
                        i += 1;
                    }
                },
                c => {
                    tokens.push(Token::Char(c));
                    i += 1;
                }
            }
        }
        Glob(tokens)
    }

    /// Whether the whole of `s` matches. Linear backtracking: on a mismatch, only the most
    /// recent `*` takes one more character, which is enough because a star matches any run.
    fn matches(&self, s: &str) -> bool {
        let s: Vec<char> = s.chars().collect();
        let p = &self.0;
        let (mut si, mut pi) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            if pi < p.len() && p[pi] != Token::Star && one(&p[pi], s[si]) {
                si += 1;
                pi += 1;
            } else if pi < p.len() && p[pi] == Token::Star {
                star = Some((pi, si));
                pi += 1;
            } else if let Some((sp, ss)) = star {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|t| *t == Token::Star)
    }
}

/// Whether the one-character token `t` matches `c`.
fn one(t: &Token, c: char) -> bool {
    match t {
        Token::Char(x) => *x == c,
        Token::Any => true,
        Token::Set(negated, items) => items.iter().any(|(lo, hi)| *lo <= c && c <= *hi) != *negated,
        Token::Star => false,
    }
}

/// The set starting at `chars[start] == '['`, and the index after its `]`; `None` when it
/// has no closing `]` (then the `[` is an ordinary character). As in fnmatch, a `!` first
/// negates, and a `]` first (after any `!`) is a member.
fn parse_set(chars: &[char], start: usize) -> Option<(Token, usize)> {
    let mut i = start + 1;
    let negated = chars.get(i) == Some(&'!');
    if negated {
        i += 1;
    }
    let first = i;
    let mut items = Vec::new();
    loop {
        let c = *chars.get(i)?;
        if c == ']' && i > first {
            return Some((Token::Set(negated, items), i + 1));
        }
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|h| *h != ']') {
            items.push((c, chars[i + 2]));
            i += 3;
        } else {
            items.push((c, c));
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// fnmatch's definition, recursively: exponential, obviously right.
    fn reference(p: &[Token], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((Token::Star, rest)) => (0..=s.len()).any(|k| reference(rest, &s[k..])),
            Some((t, rest)) => s.split_first().is_some_and(|(c, tail)| one(t, *c) && reference(rest, tail)),
        }
    }

    fn m(pattern: &str, key: &str) -> bool {
        Glob::new(pattern).matches(key)
    }

    #[test]
    fn fnmatch_cases() {
        assert!(m("*.log", "a.log"));
        assert!(m("*.log", "dir/sub/a.log"), "a star crosses slashes, as in the AWS CLI");
        assert!(!m("*.log", "a.log.gz"));
        assert!(m("logs/*", "logs/2024/01/x"));
        assert!(!m("logs/*", "other/logs/x"));
        assert!(m("a?c", "abc") && !m("a?c", "ac") && !m("a?c", "abbc"));
        assert!(m("[ab]x", "bx") && !m("[ab]x", "cx"));
        assert!(m("[a-c]x", "bx") && !m("[a-c]x", "dx"));
        assert!(m("[!a-c]x", "dx") && !m("[!a-c]x", "ax"));
        assert!(m("[]]", "]") && m("[!]]", "a") && !m("[!]]", "]"));
        assert!(m("[a-]", "-") && m("[a-]", "a"));
        assert!(m("a[b", "a[b"), "an unclosed [ is an ordinary character");
        assert!(m("*", "") && m("**", "x/y") && !m("?", ""));
        assert!(m("é*", "été"), "by character, not by byte");
        assert!(!m("A*", "a"), "case-sensitive");
    }

    #[test]
    fn the_last_matching_filter_decides_and_the_default_is_include() {
        let f = |v: &[Filter]| KeyFilter::new(v);
        let inc = |p: &str| Filter::Include(p.into());
        let exc = |p: &str| Filter::Exclude(p.into());
        assert!(f(&[]).admits("anything") && f(&[]).keeps_all());
        let only_logs = f(&[exc("*"), inc("*.log")]);
        assert!(only_logs.admits("a/b.log") && !only_logs.admits("a/b.txt"));
        let nothing = f(&[inc("*.log"), exc("*")]);
        assert!(!nothing.admits("a/b.log"));
        let no_tmp = f(&[exc("tmp/*")]);
        assert!(!no_tmp.admits("tmp/x") && no_tmp.admits("tmpx") && no_tmp.admits("a/tmp/x"));
        // Includes alone keep everything: the default already includes.
        assert!(f(&[inc("*.log")]).admits("x.txt"));
    }

    #[test]
    fn filters_serialise_as_tagged_patterns_and_are_validated() {
        let v = vec![Filter::Exclude("*".into()), Filter::Include("*.log".into())];
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#"[{"exclude":"*"},{"include":"*.log"}]"#);
        assert_eq!(serde_json::from_str::<Vec<Filter>>(&json).unwrap(), v);
        assert!(validate(&v).is_ok());
        assert!(validate(&[Filter::Include(String::new())]).is_err());
        assert!(validate(&vec![Filter::Include("x".into()); MAX_FILTERS + 1]).is_err());
    }

    fn pattern() -> impl Strategy<Value = String> {
        const PARTS: [&str; 10] = ["a", "b", "/", "*", "?", "[ab]", "[!a]", "[a-b]", "[", "]"];
        proptest::collection::vec(proptest::sample::select(&PARTS[..]), 0..8).prop_map(|v| v.concat())
    }

    fn key() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof![Just('a'), Just('b'), Just('/'), Just('[')], 0..8)
            .prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn the_matcher_agrees_with_fnmatchs_definition(p in pattern(), s in key()) {
            let g = Glob::new(&p);
            let chars: Vec<char> = s.chars().collect();
            prop_assert_eq!(g.matches(&s), reference(&g.0, &chars), "pattern {:?} key {:?}", p, s);
        }
    }
}

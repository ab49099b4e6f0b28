//! Bounce classification: `kumo.configure_bounce_classifier` compiles rules
//! files (`[rules]` tables mapping a label to regular expressions) into one
//! `RegexSet`, and the logger sets each classifiable record's
//! `bounce_classification` to the label of the first pattern that matches
//! the response as one line (`550 5.1.1 no such user`).
//!
//! The classifier is process-wide and set once, like the policy's `init`
//! that configures it; with none configured, classifying costs one atomic
//! load and no regex work.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use mlua::{Lua, Value};
use regex::{Regex, RegexSet};
use serde::Deserialize;

use crate::record::{normalize_content, RecordType, Response};

/// The label of a record that no rule matched, or that is not classified.
pub const UNCATEGORIZED: &str = "Uncategorized";

static CLASSIFIER: OnceLock<BounceClassifier> = OnceLock::new();

/// Why a set of rules files cannot become a classifier.
#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    #[error("{}: bounce classifier files must end in .toml or .json", path.display())]
    Extension { path: PathBuf },
    #[error("{}: cannot read bounce classifier rules: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: invalid TOML: {message}", path.display())]
    Toml { path: PathBuf, message: String },
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: {message}", path.display())]
    Shape { path: PathBuf, message: String },
    #[error("{location}: rule {label}: invalid pattern {pattern:?}: {message}")]
    Pattern {
        location: String,
        label: String,
        pattern: String,
        message: String,
    },
    #[error("bounce classifier rules cannot be compiled together: {0}")]
    Set(String),
    #[error("a bounce classifier with different rules is already configured; it can be configured only once")]
    AlreadyConfigured,
}

/// One pattern and where it came from, for errors.
struct Rule {
    label: Arc<str>,
    pattern: String,
    path: Arc<Path>,
    line: Option<usize>,
}

/// Collects rules in file order, label order and pattern order: the order
/// in which the first match wins.
#[derive(Default)]
pub struct ClassifierBuilder {
    rules: Vec<Rule>,
}

impl ClassifierBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a `.toml` or `.json` rules file, chosen by its extension.
    pub fn add_file(&mut self, path: impl AsRef<Path>) -> Result<(), ClassifierError> {
        let path = path.as_ref();
        let is = |ext: &str| path.extension().is_some_and(|e| e == ext);
        if !is("toml") && !is("json") {
            return Err(ClassifierError::Extension { path: path.into() });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ClassifierError::Read {
            path: path.into(),
            source,
        })?;
        if is("toml") {
            self.add_toml(path, &text)
        } else {
            self.add_json(path, &text)
        }
    }

    /// Add the rules of TOML text; `path` names it in errors.
    pub fn add_toml(&mut self, path: &Path, text: &str) -> Result<(), ClassifierError> {
        let doc = toml_edit::Document::parse(text).map_err(|e| ClassifierError::Toml {
            path: path.into(),
            message: match e.span() {
                Some(span) => format!("line {}: {}", line_of(text, span.start), e.message()),
                None => e.message().to_string(),
            },
        })?;
        let shape = |message: String| ClassifierError::Shape {
            path: path.into(),
            message,
        };
        let rules = doc
            .as_table()
            .get("rules")
            .ok_or_else(|| shape("missing the [rules] table".into()))?
            .as_table_like()
            .ok_or_else(|| shape("rules must be a table".into()))?;
        let file: Arc<Path> = path.into();
        for (label, item) in rules.iter() {
            let not_strings = || shape(format!("rule {label} must be an array of strings"));
            let patterns = item.as_array().ok_or_else(not_strings)?;
            let label: Arc<str> = label.into();
            for value in patterns.iter() {
                let pattern = value.as_str().ok_or_else(not_strings)?;
                self.rules.push(Rule {
                    label: label.clone(),
                    pattern: pattern.to_string(),
                    path: file.clone(),
                    line: value.span().map(|s| line_of(text, s.start)),
                });
            }
        }
        Ok(())
    }

    /// Add the rules of JSON text (`{"rules": {"Label": ["regex", ...]}}`).
    pub fn add_json(&mut self, path: &Path, text: &str) -> Result<(), ClassifierError> {
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|source| ClassifierError::Json {
                path: path.into(),
                source,
            })?;
        let shape = |message: String| ClassifierError::Shape {
            path: path.into(),
            message,
        };
        let rules = doc
            .get("rules")
            .ok_or_else(|| shape("missing the \"rules\" object".into()))?
            .as_object()
            .ok_or_else(|| shape("rules must be an object".into()))?;
        let file: Arc<Path> = path.into();
        for (label, item) in rules {
            let not_strings = || shape(format!("rule {label} must be an array of strings"));
            let patterns = item.as_array().ok_or_else(not_strings)?;
            let label: Arc<str> = label.as_str().into();
            for value in patterns {
                let pattern = value.as_str().ok_or_else(not_strings)?;
                self.rules.push(Rule {
                    label: label.clone(),
                    pattern: pattern.to_string(),
                    path: file.clone(),
                    line: None,
                });
            }
        }
        Ok(())
    }

    /// Compile every rule into one set.
    pub fn build(self) -> Result<BounceClassifier, ClassifierError> {
        let set = match RegexSet::new(self.rules.iter().map(|r| r.pattern.as_str())) {
            Ok(set) => set,
            // The set's error does not say which pattern is at fault; compiling
            // them one by one (only on this error path) finds it.
            Err(set_error) => {
                for rule in &self.rules {
                    if let Err(e) = Regex::new(&rule.pattern) {
                        let location = match rule.line {
                            Some(line) => format!("{}:{line}", rule.path.display()),
                            None => rule.path.display().to_string(),
                        };
                        return Err(ClassifierError::Pattern {
                            location,
                            label: rule.label.to_string(),
                            pattern: rule.pattern.clone(),
                            message: one_line(&e),
                        });
                    }
                }
                return Err(ClassifierError::Set(set_error.to_string()));
            }
        };
        Ok(BounceClassifier {
            set,
            labels: self.rules.into_iter().map(|r| r.label).collect(),
        })
    }
}

/// A syntax error's own line out of regex's multi-line report (pattern,
/// caret, message), so the error stays one `file:line: message` line.
fn one_line(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .map_or_else(|| text.replace('\n', " "), str::to_string)
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Compiled rules: a pattern's index in the set is the index of its label.
#[derive(Debug)]
pub struct BounceClassifier {
    set: RegexSet,
    labels: Vec<Arc<str>>,
}

impl BounceClassifier {
    /// Build from rules files, in order.
    pub fn from_files<P: AsRef<Path>>(
        files: impl IntoIterator<Item = P>,
    ) -> Result<Self, ClassifierError> {
        let mut builder = ClassifierBuilder::new();
        for file in files {
            builder.add_file(file)?;
        }
        builder.build()
    }

    /// The label of the first rule matching `line`, else `Uncategorized`.
    pub fn classify_line(&self, line: &str) -> &str {
        self.set
            .matches(line)
            .iter()
            .next()
            .and_then(|i| self.labels.get(i))
            .map_or(UNCATEGORIZED, |label| label)
    }

    /// Classify a response as one line: code, enhanced code (when there is
    /// one) and content with line breaks turned into spaces.
    pub fn classify_response(&self, response: &Response) -> &str {
        self.classify_line(&single_line(response))
    }

    fn same_rules(&self, other: &BounceClassifier) -> bool {
        self.labels == other.labels && self.set.patterns() == other.set.patterns()
    }
}

/// `550 5.1.1 no such user`: what rules are written against.
pub fn single_line(response: &Response) -> String {
    use std::fmt::Write;
    let content = &response.content;
    let mut line = String::with_capacity(content.len() + 16);
    // Writing into a String cannot fail.
    let _ = write!(line, "{} ", response.code);
    if let Some(e) = &response.enhanced_code {
        let _ = write!(line, "{}.{}.{} ", e.class, e.subject, e.detail);
    }
    if content.contains(['\r', '\n']) {
        line.push_str(&normalize_content(content));
    } else {
        line.push_str(content);
    }
    line
}

/// Records whose response came from a delivery attempt or stands for one
/// (expirations, administrative bounces, out-of-band reports, feedback and
/// SMTP rejections) are classified; the others always say `Uncategorized`.
pub fn is_classifiable(kind: RecordType) -> bool {
    matches!(
        kind,
        RecordType::Bounce
            | RecordType::TransientFailure
            | RecordType::Expiration
            | RecordType::AdminBounce
            | RecordType::Oob
            | RecordType::Feedback
            | RecordType::Rejection
    )
}

/// Make `classifier` the process-wide one. A second call with the same
/// rules succeeds (several engines in one process run the same `init`);
/// different rules are refused, since records already logged were
/// classified with the first.
pub fn install(classifier: BounceClassifier) -> Result<(), ClassifierError> {
    match CLASSIFIER.set(classifier) {
        Ok(()) => Ok(()),
        Err(refused) if CLASSIFIER.get().is_some_and(|c| c.same_rules(&refused)) => Ok(()),
        Err(_) => Err(ClassifierError::AlreadyConfigured),
    }
}

/// The `bounce_classification` of a record of `kind` with `response`.
pub(crate) fn classify(kind: RecordType, response: &Response) -> String {
    classify_with(CLASSIFIER.get(), kind, response).to_string()
}

fn classify_with<'a>(
    classifier: Option<&'a BounceClassifier>,
    kind: RecordType,
    response: &Response,
) -> &'a str {
    match classifier {
        Some(c) if is_classifiable(kind) => c.classify_response(response),
        _ => UNCATEGORIZED,
    }
}

/// `kumo.configure_bounce_classifier` parameters. Classification runs
/// inline on the logging path, so the thread pool and cache tuning keys
/// are accepted for compatibility and have no effect.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ClassifierParams {
    files: Vec<String>,
    #[serde(default)]
    back_pressure: Option<usize>,
    #[serde(default)]
    pool_size: Option<usize>,
    #[serde(default)]
    cache_size: Option<usize>,
    #[serde(default)]
    uncategorized_cache_size: Option<usize>,
}

const WHAT: &str = "kumo.configure_bounce_classifier";

/// The Lua function: compile the files and, unless the policy is only being
/// checked, install the classifier. Errors carry the caller's `file:line`.
pub(crate) fn configure(lua: &Lua, params: Value) -> mlua::Result<()> {
    let params: ClassifierParams = hermod_policy::config::from_lua_strict(lua, params, WHAT)?;
    let located = |e: ClassifierError| hermod_policy::errors::located(lua, format!("{WHAT}: {e}"));
    let classifier = BounceClassifier::from_files(&params.files).map_err(located)?;
    if hermod_policy::startup::is_validating(lua) {
        return Ok(());
    }
    install(classifier).map_err(located)
}

#[cfg(test)]
#[path = "bounce_tests.rs"]
mod tests;

//! `per_record.<Type>.template`: a MiniJinja template rendered in place of
//! the JSON line, with the record's fields as top-level variables
//! (`{{ id }}`, `{{ response.code }}`, `{{ timestamp - created }}`) and
//! the whole record as `log_record`.

use std::collections::HashMap;

use minijinja::Environment;

use crate::config::PerRecordConfig;
use crate::record::{LogRecord, RecordType};

/// A `per_record` template that does not compile or render.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// `what` names the configure function.
    #[error("{what}: per_record.{kind}.template: {source:#}")]
    Compile {
        what: &'static str,
        kind: RecordType,
        #[source]
        source: minijinja::Error,
    },
    #[error("per_record.{name}.template: {source:#}")]
    Render {
        name: &'static str,
        #[source]
        source: minijinja::Error,
    },
}

/// The compiled templates of one logger. Empty (and free to consult) when
/// the logger has none, which is the common case.
#[derive(Default)]
pub(crate) struct RecordTemplates {
    env: Option<Environment<'static>>,
    /// Record types with a `per_record` entry of their own. Such an entry
    /// decides alone (no template there means JSON); only types without one
    /// fall back to `Any`, as KumoMTA does.
    listed: Vec<RecordType>,
    /// Listed types whose entry has a template.
    templated: Vec<RecordType>,
    any: bool,
}

impl RecordTemplates {
    /// Compile every template; a syntax error names the record type.
    pub fn compile(
        what: &'static str,
        per_record: &HashMap<RecordType, PerRecordConfig>,
    ) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        let mut listed = Vec::new();
        let mut templated = Vec::new();
        let mut any = false;
        for (kind, p) in per_record {
            if *kind != RecordType::Any {
                listed.push(*kind);
            }
            let Some(source) = &p.template else {
                continue;
            };
            env.add_template_owned(kind.as_str().to_string(), source.clone())
                .map_err(|source| TemplateError::Compile {
                    what,
                    kind: *kind,
                    source,
                })?;
            if *kind == RecordType::Any {
                any = true;
            } else {
                templated.push(*kind);
            }
        }
        if templated.is_empty() && !any {
            return Ok(Self::default());
        }
        Ok(Self {
            env: Some(env),
            listed,
            templated,
            any,
        })
    }

    /// The template to use for `kind`, if any: its own, else `Any`'s.
    fn name_for(&self, kind: RecordType) -> Option<&'static str> {
        if self.listed.contains(&kind) {
            self.templated.contains(&kind).then(|| kind.as_str())
        } else if self.any {
            Some(RecordType::Any.as_str())
        } else {
            None
        }
    }

    /// Whether records of `kind` are rendered rather than written as JSON.
    pub fn covers(&self, kind: RecordType) -> bool {
        self.env.is_some() && self.name_for(kind).is_some()
    }

    /// `None` when `kind` has no template (the caller writes JSON). The text
    /// always ends in exactly the newline the template produced, or one added.
    pub fn render(&self, record: &LogRecord) -> Option<Result<String, TemplateError>> {
        let env = self.env.as_ref()?;
        let name = self.name_for(record.kind)?;
        let rendered = env
            .get_template(name)
            .and_then(|t| {
                let fields = minijinja::Value::from_serialize(record);
                // The whole record is also there by name, as in KumoMTA.
                t.render(minijinja::context! { log_record => fields.clone(), ..fields })
            })
            .map(|mut text| {
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                text
            })
            .map_err(|source| TemplateError::Render { name, source });
        Some(rendered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample;

    fn sample_record(kind: RecordType) -> LogRecord {
        let mut r = sample();
        r.kind = kind;
        r
    }

    fn templates(entries: &[(RecordType, &str)]) -> Result<RecordTemplates, TemplateError> {
        let per_record = entries
            .iter()
            .map(|(k, t)| {
                (
                    *k,
                    PerRecordConfig {
                        template: Some(t.to_string()),
                        ..Default::default()
                    },
                )
            })
            .collect();
        RecordTemplates::compile("test", &per_record)
    }

    #[test]
    fn template_sees_record_fields_and_gets_a_trailing_newline() {
        let t = templates(&[(
            RecordType::Bounce,
            "Bounce! id={{ id }} code={{ response.code }} age={{ timestamp - created }}",
        )])
        .unwrap();
        let mut rec = sample_record(RecordType::Bounce);
        rec.timestamp = rec.created + 7;
        let text = t.render(&rec).unwrap().unwrap();
        assert_eq!(
            text,
            format!("Bounce! id={} code={} age=7\n", rec.id, rec.response.code)
        );
        assert!(t.render(&sample_record(RecordType::Delivery)).is_none());
    }

    #[test]
    fn any_template_applies_to_types_without_their_own() {
        let t = templates(&[
            (RecordType::Any, "{{ type }}\n"),
            (RecordType::Delivery, "D {{ site }}"),
        ])
        .unwrap();
        let text = t.render(&sample_record(RecordType::Reception)).unwrap();
        assert_eq!(text.unwrap(), "Reception\n");
        let text = t.render(&sample_record(RecordType::Delivery)).unwrap();
        assert!(text.unwrap().starts_with("D "));
    }

    #[test]
    fn a_listed_type_without_template_stays_json_even_with_an_any_template() {
        let mut per_record = HashMap::new();
        per_record.insert(
            RecordType::Any,
            PerRecordConfig {
                template: Some("{{ log_record.type }} {{ id }}".into()),
                ..Default::default()
            },
        );
        per_record.insert(RecordType::Delivery, PerRecordConfig::default());
        let t = RecordTemplates::compile("test", &per_record).unwrap();
        assert!(t.render(&sample_record(RecordType::Delivery)).is_none());
        let rec = sample_record(RecordType::Bounce);
        let text = t.render(&rec).unwrap().unwrap();
        assert_eq!(text, format!("Bounce {}\n", rec.id));
    }

    #[test]
    fn template_syntax_error_is_reported_with_its_record_type() {
        let Err(e) = templates(&[(RecordType::Delivery, "{{ id ")]) else {
            panic!("a broken template compiled");
        };
        assert!(
            e.to_string()
                .starts_with("test: per_record.Delivery.template: "),
            "{e}"
        );
    }

    #[test]
    fn no_templates_render_nothing() {
        let t = RecordTemplates::compile("test", &HashMap::new()).unwrap();
        assert!(t.render(&sample_record(RecordType::Bounce)).is_none());
    }
}

//! Compiling the request's templates once and rendering them per recipient.

use minijinja::{AutoEscape, Environment};
use serde_json::{Map, Value};

use super::request::TemplateDialect;

/// One template of the request. HTML parts are auto-escaped, so a
/// substitution cannot inject markup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Content,
    Subject,
    TextBody,
    HtmlBody,
    AmpHtmlBody,
    Header(usize),
}

impl Part {
    fn name(self) -> String {
        match self {
            Part::Content => "content".into(),
            Part::Subject => "content.subject".into(),
            Part::TextBody => "content.text_body".into(),
            Part::HtmlBody => "content.html_body.html".into(),
            Part::AmpHtmlBody => "content.amp_html_body.html".into(),
            Part::Header(i) => format!("content.headers[{i}]"),
        }
    }
}

/// A template that does not compile or render; `part` is the request
/// field it came from (HTTP 422, or the recipient's error).
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template error in {part}: {source}")]
    Syntax {
        part: String,
        #[source]
        source: minijinja::Error,
    },
    #[error("template_dialect Handlebars is not supported; use Jinja or Static")]
    Handlebars,
    #[error("template {part} missing: {source}")]
    Lookup {
        part: String,
        #[source]
        source: minijinja::Error,
    },
    #[error("template {part} missing")]
    Missing { part: String },
    #[error("rendering {part}: {source}")]
    Render {
        part: String,
        #[source]
        source: minijinja::Error,
    },
}

pub struct Templates {
    dialect: TemplateDialect,
    env: Environment<'static>,
    statics: Vec<(Part, String)>,
}

impl Templates {
    /// Compile every part; a syntax error names the part (HTTP 422).
    pub fn compile(
        dialect: TemplateDialect,
        parts: Vec<(Part, String)>,
    ) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        // Message bodies end with a newline that must survive rendering.
        env.set_keep_trailing_newline(true);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        let mut statics = Vec::new();
        match dialect {
            TemplateDialect::Jinja => {
                for (part, source) in parts {
                    env.add_template_owned(part.name(), source)
                        .map_err(|source| TemplateError::Syntax {
                            part: display_name(part),
                            source,
                        })?;
                }
            }
            TemplateDialect::Static => statics = parts,
            TemplateDialect::Handlebars => return Err(TemplateError::Handlebars),
        }
        Ok(Self {
            dialect,
            env,
            statics,
        })
    }

    pub fn render(&self, part: Part, ctx: &minijinja::Value) -> Result<String, TemplateError> {
        match self.dialect {
            TemplateDialect::Jinja => {
                let name = part.name();
                let t = self
                    .env
                    .get_template(&name)
                    .map_err(|source| TemplateError::Lookup {
                        part: display_name(part),
                        source,
                    })?;
                t.render(ctx).map_err(|source| TemplateError::Render {
                    part: display_name(part),
                    source,
                })
            }
            _ => self
                .statics
                .iter()
                .find(|(p, _)| *p == part)
                .map(|(_, s)| s.clone())
                .ok_or_else(|| TemplateError::Missing {
                    part: display_name(part),
                }),
        }
    }
}

fn display_name(part: Part) -> String {
    part.name().trim_end_matches(".html").to_string()
}

/// Variables for one recipient: predefined `email`, `name`, `to_header`,
/// then the request's substitutions, then the recipient's own (which win).
pub fn context(
    email: &str,
    name: Option<&str>,
    to_header: &str,
    global: &Map<String, Value>,
    recipient: &Map<String, Value>,
) -> minijinja::Value {
    let mut vars = Map::new();
    vars.insert("email".into(), Value::String(email.into()));
    vars.insert(
        "name".into(),
        name.map(|n| Value::String(n.into())).unwrap_or(Value::Null),
    );
    vars.insert("to_header".into(), Value::String(to_header.into()));
    for (k, v) in global.iter().chain(recipient.iter()) {
        vars.insert(k.clone(), v.clone());
    }
    minijinja::Value::from_serialize(&vars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn recipient_substitutions_override_global_ones() {
        let t = Templates::compile(
            TemplateDialect::Jinja,
            vec![(Part::TextBody, "{{ greeting }} {{ who }}\n".into())],
        )
        .unwrap();
        let ctx = context(
            "b@y.com",
            None,
            "b@y.com",
            &map(json!({"greeting": "Hello", "who": "world"})),
            &map(json!({"who": "Bob"})),
        );
        assert_eq!(t.render(Part::TextBody, &ctx).unwrap(), "Hello Bob\n");
    }

    #[test]
    fn html_parts_are_escaped_and_text_parts_are_not() {
        let t = Templates::compile(
            TemplateDialect::Jinja,
            vec![
                (Part::HtmlBody, "<p>{{ x }}</p>".into()),
                (Part::TextBody, "{{ x }}".into()),
            ],
        )
        .unwrap();
        let ctx = context(
            "b@y.com",
            None,
            "b@y.com",
            &map(json!({"x": "<b>&"})),
            &Map::new(),
        );
        assert_eq!(
            t.render(Part::HtmlBody, &ctx).unwrap(),
            "<p>&lt;b&gt;&amp;</p>"
        );
        assert_eq!(t.render(Part::TextBody, &ctx).unwrap(), "<b>&");
    }

    #[test]
    fn syntax_error_names_the_part() {
        let e = Templates::compile(
            TemplateDialect::Jinja,
            vec![(Part::Subject, "{{ oops".into())],
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            e.starts_with("template error in content.subject: ") && e.contains("syntax error"),
            "{e}"
        );
    }

    #[test]
    fn static_dialect_leaves_braces_alone() {
        let t = Templates::compile(
            TemplateDialect::Static,
            vec![(Part::Content, "{{ x }}".into())],
        )
        .unwrap();
        let ctx = context("b@y.com", None, "b@y.com", &Map::new(), &Map::new());
        assert_eq!(t.render(Part::Content, &ctx).unwrap(), "{{ x }}");
    }

    #[test]
    fn predefined_variables_are_available() {
        let t = Templates::compile(
            TemplateDialect::Jinja,
            vec![(Part::Content, "To: {{ to_header }} {{ email }}".into())],
        )
        .unwrap();
        let ctx = context(
            "b@y.com",
            Some("Bob"),
            "\"Bob\" <b@y.com>",
            &Map::new(),
            &Map::new(),
        );
        assert_eq!(
            t.render(Part::Content, &ctx).unwrap(),
            "To: \"Bob\" <b@y.com> b@y.com"
        );
    }
}

//! `${env:VAR}` and `${env:VAR:-default}` expansion, as the collector's env
//! provider does it: on parsed values, so that a variable can never inject
//! YAML structure. A value that is exactly one reference is re-read as a
//! YAML scalar, so `port: ${env:PORT}` gives a number. `$$` is a literal `$`.

use serde_yaml::Value;

/// A problem found while expanding, at the path of the value.
#[derive(Debug)]
pub struct EnvIssue {
    pub path: Vec<String>,
    pub message: String,
    pub is_error: bool,
}

/// Expands every string value under `value`, in place.
pub fn expand(value: &mut Value, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<EnvIssue> {
    let mut issues = Vec::new();
    let mut path = Vec::new();
    expand_value(value, lookup, &mut path, &mut issues);
    issues
}

fn expand_value(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    path: &mut Vec<String>,
    issues: &mut Vec<EnvIssue>,
) {
    match value {
        Value::String(text) if text.contains('$') => match expand_str(text, lookup) {
            Ok(expanded) => {
                for name in expanded.missing {
                    issues.push(EnvIssue {
                        path: path.clone(),
                        message: format!(
                            "environment variable `{name}` is not set and has no default; using an empty string"
                        ),
                        is_error: false,
                    });
                }
                *value = if expanded.whole_reference {
                    reparse_scalar(expanded.text)
                } else {
                    Value::String(expanded.text)
                };
            }
            Err(message) => issues.push(EnvIssue {
                path: path.clone(),
                message,
                is_error: true,
            }),
        },
        Value::Mapping(map) => {
            for (key, child) in map.iter_mut() {
                path.push(key_text(key));
                expand_value(child, lookup, path, issues);
                path.pop();
            }
        }
        Value::Sequence(items) => {
            for (index, child) in items.iter_mut().enumerate() {
                path.push(format!("[{index}]"));
                expand_value(child, lookup, path, issues);
                path.pop();
            }
        }
        Value::Tagged(tagged) => expand_value(&mut tagged.value, lookup, path, issues),
        _ => {}
    }
}

pub(crate) fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

fn reparse_scalar(text: String) -> Value {
    match serde_yaml::from_str::<Value>(&text) {
        Ok(value @ (Value::Bool(_) | Value::Number(_))) => value,
        _ => Value::String(text),
    }
}

struct Expanded {
    text: String,
    whole_reference: bool,
    missing: Vec<String>,
}

fn expand_str(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Expanded, String> {
    let mut out = String::with_capacity(input.len());
    let mut missing = Vec::new();
    let mut references = 0;
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{input}`"))?;
            let (name, default) = parse_reference(&body[..end])?;
            references += 1;
            match lookup(name) {
                Some(value) => out.push_str(&value),
                None => match default {
                    Some(default) => out.push_str(default),
                    None => missing.push(name.to_string()),
                },
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    let whole_reference = references == 1 && input.starts_with("${") && input.ends_with('}');
    Ok(Expanded {
        text: out,
        whole_reference,
        missing,
    })
}

/// `env:NAME` or `env:NAME:-default`.
fn parse_reference(reference: &str) -> Result<(&str, Option<&str>), String> {
    let Some(spec) = reference.strip_prefix("env:") else {
        return Err(format!(
            "unsupported reference `${{{reference}}}`: use `${{env:NAME}}` or `${{env:NAME:-default}}`"
        ));
    };
    let (name, default) = match spec.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (spec, None),
    };
    let valid_name = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return Err(format!(
            "invalid environment variable name `{name}` in `${{{reference}}}`"
        ));
    }
    Ok((name, default))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("4318".into()),
            "HOST" => Some("127.0.0.1".into()),
            _ => None,
        }
    }

    fn expand_yaml(yaml: &str) -> (Value, Vec<EnvIssue>) {
        let mut value: Value = serde_yaml::from_str(yaml).unwrap();
        let issues = expand(&mut value, &lookup);
        (value, issues)
    }

    #[test]
    fn expands_variables_defaults_and_escapes() {
        let (value, issues) = expand_yaml(
            "a: ${env:HOST}:${env:PORT}\nb: ${env:NOPE:-fallback}\nc: cost $$5\nd: ${env:PORT}\n",
        );
        assert!(issues.is_empty());
        assert_eq!(value["a"], Value::String("127.0.0.1:4318".into()));
        assert_eq!(value["b"], Value::String("fallback".into()));
        assert_eq!(value["c"], Value::String("cost $5".into()));
        assert_eq!(value["d"], Value::Number(4318.into()));
    }

    #[test]
    fn a_missing_variable_is_a_warning_with_its_path() {
        let (value, issues) = expand_yaml("x:\n  key: ${env:MISSING}\n");
        assert_eq!(value["x"]["key"], Value::String(String::new()));
        assert_eq!(issues.len(), 1);
        assert!(!issues[0].is_error);
        assert_eq!(issues[0].path, vec!["x", "key"]);
    }

    #[test]
    fn an_unknown_provider_is_an_error() {
        let (_, issues) = expand_yaml("x: ${file:/etc/passwd}\n");
        assert!(issues[0].is_error);
        assert!(issues[0].message.contains("unsupported reference"));
    }

    #[test]
    fn injected_yaml_stays_a_string() {
        let mut value: Value = serde_yaml::from_str("x: ${env:EVIL}\n").unwrap();
        expand(&mut value, &|_| Some("{a: 1}".into()));
        assert_eq!(value["x"], Value::String("{a: 1}".into()));
    }
}

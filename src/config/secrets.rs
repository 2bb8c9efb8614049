//! `%{file:/abs/path}%` and `%{env:NAME}%` in configuration strings.
//!
//! Substitution happens on the JSON tree before typing, so any string value
//! may hold a secret. The paths of every string that held one are kept so
//! `--print` can show `"<redacted>"` there, and the values are kept so error
//! messages can be scrubbed of them.

use super::Problem;
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Default, Clone)]
pub struct Secrets {
    /// JSON paths (as segments) of strings that contained a reference.
    pub paths: Vec<Vec<Segment>>,
    /// Resolved values, to scrub from any message.
    values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

pub fn path_text(segments: &[Segment]) -> String {
    let mut out = String::new();
    for s in segments {
        match s {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

impl Secrets {
    /// Replaces every reference in `root`; `offline` leaves the references
    /// in place (and reads nothing) but still checks their syntax.
    pub fn resolve(root: &mut Value, offline: bool, problems: &mut Vec<Problem>) -> Secrets {
        let mut secrets = Secrets::default();
        let mut path = Vec::new();
        secrets.walk(root, &mut path, offline, problems);
        secrets
    }

    fn walk(
        &mut self,
        v: &mut Value,
        path: &mut Vec<Segment>,
        offline: bool,
        problems: &mut Vec<Problem>,
    ) {
        match v {
            Value::String(s) if s.contains("%{") => {
                match expand(s, offline) {
                    Ok((text, found)) => {
                        if !offline {
                            self.values
                                .extend(found.into_iter().filter(|f| f.len() >= 3));
                            *s = text;
                        }
                    }
                    Err(msg) => problems.push(Problem::error(path_text(path), msg)),
                }
                self.paths.push(path.clone());
            }
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    path.push(Segment::Key(k.clone()));
                    self.walk(child, path, offline, problems);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter_mut().enumerate() {
                    path.push(Segment::Index(i));
                    self.walk(child, path, offline, problems);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    /// Removes any secret value from a message meant for a log or terminal.
    pub fn scrub(&self, message: &str) -> String {
        let mut out = message.to_string();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "<redacted>");
            }
        }
        out
    }

    /// Replaces the value at every secret path of `root` by `"<redacted>"`.
    pub fn redact(&self, root: &mut Value) {
        for p in &self.paths {
            if let Some(slot) = lookup_mut(root, p) {
                *slot = Value::String("<redacted>".into());
            }
        }
    }

    #[cfg(test)]
    pub fn is_secret_path(&self, path: &str) -> bool {
        self.paths.iter().any(|p| path_text(p) == path)
    }
}

fn lookup_mut<'a>(root: &'a mut Value, path: &[Segment]) -> Option<&'a mut Value> {
    let mut cur = root;
    for seg in path {
        cur = match (seg, cur) {
            (Segment::Key(k), Value::Object(m)) => m.get_mut(k)?,
            (Segment::Index(i), Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// `s` with its references read now (files again from disk).
pub fn expand_now(s: &str) -> Result<String, String> {
    expand(s, false).map(|(text, _)| text)
}

/// Expands the references in `s`; returns the new text and the values read.
fn expand(s: &str, offline: bool) -> Result<(String, Vec<String>), String> {
    let mut out = String::new();
    let mut found = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("%{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}%")
            .ok_or("unterminated secret reference: '%{' without a closing '}%'")?;
        let reference = &after[..end];
        let value = if offline {
            check_reference(reference)?;
            format!("%{{{reference}}}%")
        } else {
            read_reference(reference)?
        };
        if !offline {
            found.push(value.clone());
        }
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok((out, found))
}

fn check_reference(reference: &str) -> Result<(), String> {
    if let Some(path) = reference.strip_prefix("file:") {
        if !Path::new(path).is_absolute() {
            return Err(format!(
                "secret file '{path}' must be an absolute path (%{{file:/abs/path}}%)"
            ));
        }
        Ok(())
    } else if let Some(name) = reference.strip_prefix("env:") {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("'{name}' is not an environment variable name"));
        }
        Ok(())
    } else {
        Err(format!(
            "unknown secret reference '%{{{reference}}}%' (use %{{file:/abs/path}}% or %{{env:NAME}}%)"
        ))
    }
}

fn read_reference(reference: &str) -> Result<String, String> {
    check_reference(reference)?;
    if let Some(path) = reference.strip_prefix("file:") {
        let mut text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read secret file {path}: {}", io_reason(&e)))?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        Ok(text)
    } else {
        let name = &reference["env:".len()..];
        std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn file_and_env_are_substituted_and_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "hunter22\n").unwrap();
        std::env::set_var("POSTERN_TEST_SECRET", "envsecret");
        let mut v = json!({"a": {"b": [format!("x%{{file:{}}}%y", f.display())]}, "c": "%{env:POSTERN_TEST_SECRET}%"});
        let mut problems = vec![];
        let s = Secrets::resolve(&mut v, false, &mut problems);
        assert!(problems.is_empty());
        assert_eq!(v["a"]["b"][0], "xhunter22y");
        assert_eq!(v["c"], "envsecret");
        assert_eq!(
            s.scrub("oops hunter22 and envsecret"),
            "oops <redacted> and <redacted>"
        );
        s.redact(&mut v);
        assert_eq!(v["a"]["b"][0], "<redacted>");
        assert!(s.is_secret_path("a.b[0]"));
    }

    #[test]
    fn offline_reads_nothing_but_checks_syntax() {
        let mut v = json!({"k": "%{file:/definitely/not/there}%", "r": "%{file:relative}%", "u": "%{vault:x}%"});
        let mut problems = vec![];
        Secrets::resolve(&mut v, true, &mut problems);
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["r", "u"]);
        assert_eq!(v["k"], "%{file:/definitely/not/there}%");
    }

    #[test]
    fn a_missing_file_names_the_key_and_path() {
        let mut v = json!({"session": {"auth": {"users": {"app": {"secret": "%{file:/nonexistent/app}%"}}}}});
        let mut problems = vec![];
        Secrets::resolve(&mut v, false, &mut problems);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "session.auth.users.app.secret");
        assert!(problems[0].message.contains("/nonexistent/app"));
    }
}

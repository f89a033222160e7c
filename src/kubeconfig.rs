//! kubeconfig files: merge one cluster's cluster, user and context entries into a file without touching the
//! others, as `aws eks update-kubeconfig` does. The file is read as generic YAML so fields kforge does not know
//! survive; it is written atomically with mode 0600 (it names credentials plugins and may hold tokens).

use std::path::{Path, PathBuf};

use serde_norway::{Mapping, Value};

/// What a kubeconfig needs to reach and authenticate to one EKS cluster.
#[derive(Debug, Clone)]
pub struct EksAccess {
    /// Cluster, user and context entries all use this name.
    pub name: String,
    pub server: String,
    /// Base64 PEM of the cluster CA, as EKS returns it.
    pub certificate_authority_data: String,
    /// The exec plugin: the kforge binary and its `token` arguments.
    pub command: String,
    pub args: Vec<String>,
    /// Environment for the plugin (AWS_PROFILE when --profile was given).
    pub env: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("cannot read kubeconfig {path}: {source}\n  hint: check the path given to --kubeconfig")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a kubeconfig: {message}\n  hint: fix or move the file; kforge does not overwrite what it cannot read"
    )]
    Parse { path: PathBuf, message: String },
    #[error("cannot write kubeconfig {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `--kubeconfig`, else the first file of `$KUBECONFIG`, else `~/.kube/config`.
pub fn default_path() -> PathBuf {
    if let Some(first) = std::env::var_os("KUBECONFIG")
        .and_then(|v| std::env::split_paths(&v).next())
        .filter(|p| !p.as_os_str().is_empty())
    {
        return first;
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".kube").join("config")
}

fn key(k: &str) -> Value {
    Value::String(k.into())
}

/// Replaces the entry named `name` in the list at `field` (or appends it).
fn upsert(doc: &mut Mapping, field: &str, name: &str, entry: Value) {
    let list = doc.entry(key(field)).or_insert_with(|| Value::Sequence(Vec::new()));
    if !list.is_sequence() {
        *list = Value::Sequence(Vec::new());
    }
    let seq = list.as_sequence_mut().expect("made a sequence");
    match seq
        .iter_mut()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
    {
        Some(existing) => *existing = entry,
        None => seq.push(entry),
    }
}

/// Merges `access` into the kubeconfig text `existing` and makes it the current context.
pub fn merge(existing: &str, access: &EksAccess) -> Result<String, String> {
    let mut doc: Mapping = if existing.trim().is_empty() {
        Mapping::new()
    } else {
        match serde_norway::from_str::<Value>(existing).map_err(|e| e.to_string())? {
            Value::Mapping(m) => m,
            Value::Null => Mapping::new(),
            _ => return Err("the top level is not a mapping".into()),
        }
    };
    doc.entry(key("apiVersion")).or_insert_with(|| key("v1"));
    doc.entry(key("kind")).or_insert_with(|| key("Config"));
    doc.entry(key("preferences"))
        .or_insert_with(|| Value::Mapping(Mapping::new()));

    let cluster = serde_norway::to_value(serde_json::json!({
        "name": access.name,
        "cluster": {"server": access.server, "certificate-authority-data": access.certificate_authority_data},
    }))
    .map_err(|e| e.to_string())?;
    let env: Vec<serde_json::Value> = access
        .env
        .iter()
        .map(|(k, v)| serde_json::json!({"name": k, "value": v}))
        .collect();
    let user = serde_norway::to_value(serde_json::json!({
        "name": access.name,
        "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": access.command,
            "args": access.args,
            "env": if env.is_empty() { serde_json::Value::Null } else { serde_json::Value::Array(env) },
            "interactiveMode": "Never",
            "provideClusterInfo": false,
        }},
    }))
    .map_err(|e| e.to_string())?;
    let context = serde_norway::to_value(serde_json::json!({
        "name": access.name,
        "context": {"cluster": access.name, "user": access.name},
    }))
    .map_err(|e| e.to_string())?;
    upsert(&mut doc, "clusters", &access.name, cluster);
    upsert(&mut doc, "users", &access.name, user);
    upsert(&mut doc, "contexts", &access.name, context);
    doc.insert(key("current-context"), key(&access.name));
    serde_norway::to_string(&Value::Mapping(doc)).map_err(|e| e.to_string())
}

/// Merges into the file at `path` (created with its directory if missing), atomically, mode 0600.
pub fn write(path: &Path, access: &EksAccess) -> Result<(), KubeconfigError> {
    let existing = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(KubeconfigError::Read {
                path: path.into(),
                source,
            });
        }
    };
    let merged = merge(&existing, access).map_err(|message| KubeconfigError::Parse {
        path: path.into(),
        message,
    })?;
    let write_err = |source| KubeconfigError::Write {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    crate::fsutil::write_private(path, merged.as_bytes()).map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn access(name: &str) -> EksAccess {
        EksAccess {
            name: name.into(),
            server: "https://ABC.gr7.us-east-1.eks.amazonaws.com".into(),
            certificate_authority_data: "LS0tLS1CRUdJTg==".into(),
            command: "/usr/local/bin/kforge".into(),
            args: vec![
                "token".into(),
                "--cluster".into(),
                "demo".into(),
                "--region".into(),
                "us-east-1".into(),
            ],
            env: vec![],
        }
    }

    const OTHER: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: kind\n  cluster: {server: 'https://127.0.0.1:6443', insecure-skip-tls-verify: true}\nusers:\n- name: kind\n  user: {token: abc}\ncontexts:\n- name: kind\n  context: {cluster: kind, user: kind, namespace: dev}\ncurrent-context: kind\nextensions: [{name: mine, extension: {x: 1}}]\n";

    fn names(doc: &Value, field: &str) -> Vec<String> {
        doc[field]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn merging_keeps_other_entries_and_fields() {
        let merged = merge(OTHER, &access("demo.us-east-1.kforge")).unwrap();
        let doc: Value = serde_norway::from_str(&merged).unwrap();
        for field in ["clusters", "users", "contexts"] {
            assert_eq!(names(&doc, field), ["kind", "demo.us-east-1.kforge"], "{field}");
        }
        assert_eq!(doc["current-context"].as_str(), Some("demo.us-east-1.kforge"));
        assert_eq!(
            doc["contexts"][0]["context"]["namespace"].as_str(),
            Some("dev"),
            "foreign fields survive"
        );
        assert_eq!(doc["extensions"][0]["name"].as_str(), Some("mine"));
        let exec = &doc["users"][1]["user"]["exec"];
        assert_eq!(exec["command"].as_str(), Some("/usr/local/bin/kforge"));
        assert_eq!(exec["args"][0].as_str(), Some("token"));
    }

    #[test]
    fn merging_twice_changes_nothing() {
        let once = merge(OTHER, &access("demo")).unwrap();
        let twice = merge(&once, &access("demo")).unwrap();
        assert_eq!(once, twice);
        let doc: Value = serde_norway::from_str(&twice).unwrap();
        assert_eq!(names(&doc, "users"), ["kind", "demo"]);
    }

    #[test]
    fn empty_and_foreign_files() {
        let doc: Value = serde_norway::from_str(&merge("", &access("demo")).unwrap()).unwrap();
        assert_eq!(doc["kind"].as_str(), Some("Config"));
        assert!(merge("- a\n- b\n", &access("demo")).is_err());
    }

    #[test]
    fn written_private_and_merged() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("nested/config");
        write(&path, &access("demo")).unwrap();
        write(&path, &access("other")).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let doc: Value = serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(names(&doc, "contexts"), ["demo", "other"]);
        std::fs::write(&path, "clusters: [unclosed\n").unwrap();
        assert!(matches!(write(&path, &access("x")), Err(KubeconfigError::Parse { .. })));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "clusters: [unclosed\n",
            "an unreadable file is left alone"
        );
    }
}

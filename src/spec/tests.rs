use super::*;

const MINIMAL: &str =
    "apiVersion: kforge.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: demo\nspec:\n  provider: eks\n";

#[test]
fn parses_minimal_document() {
    let spec = parse(MINIMAL, "t.yaml").unwrap();
    assert_eq!(spec.metadata.name, "demo");
    assert_eq!(spec.spec.provider, Provider::Eks);
}

#[test]
fn hostile_input_is_bounded_and_positioned() {
    // A second document is named by the line where it starts.
    let two = format!("{MINIMAL}---\n{MINIMAL}");
    let err = parse(&two, "t.yaml").unwrap_err().to_string();
    assert!(
        err.starts_with("t.yaml:7:1: a second YAML document starts here"),
        "{err}"
    );
    assert!(
        parse(&format!("---\n{MINIMAL}"), "t.yaml").is_ok(),
        "a leading --- is one document"
    );
    // A key given twice is refused where it repeats, not resolved silently.
    let dup = format!("{MINIMAL}  tags: {{team: a, team: b}}\n");
    let err = parse(&dup, "t.yaml").unwrap_err().to_string();
    assert!(err.starts_with("t.yaml:7:"), "{err}");
    assert!(
        err.contains("duplicate entry with key \"team\"") && err.contains("keep one"),
        "{err}"
    );
    // Nesting beyond the limit is refused before parsing, at the line that crosses it.
    let deep = format!("{MINIMAL}  tags: {}1{}\n", "[".repeat(100), "]".repeat(100));
    let err = parse(&deep, "t.yaml").unwrap_err().to_string();
    assert!(
        err.starts_with("t.yaml:7:1: the document nests deeper than 64 levels"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    // Not UTF-8: line, column and byte offset.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, b"apiVersion: kforge.dev/v1alpha1\nkind: Clu\xffster\n").unwrap();
    let err = load(&bad).unwrap_err().to_string();
    assert!(err.contains("bad.yaml:2:10: not UTF-8 text: byte 41 (0xff)"), "{err}");
    // Larger than the limit: refused after reading just past it, naming the limit.
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, format!("{MINIMAL}#{}\n", "x".repeat(MAX_SPEC_BYTES as usize))).unwrap();
    let err = load(&big).unwrap_err().to_string();
    assert!(err.contains("larger than 1048576 bytes"), "{err}");
    let err = load(Path::new("/dev/zero")).unwrap_err().to_string();
    assert!(err.contains("larger than 1048576 bytes"), "{err}");
}

#[test]
fn null_where_a_string_is_required_is_refused_with_its_path() {
    let hosts = "apiVersion: kforge.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: lab\nspec:\n  provider: hosts\n  hosts:\n    - name: m1\n      role: master\n      identityFile: k\n      address: null\n";
    let err = parse(hosts, "t.yaml").unwrap_err().to_string();
    assert!(
        err.starts_with("t.yaml:11:7: spec.hosts[0].address: null where a string is required"),
        "{err}"
    );
    // `~` and an empty value are YAML's null too; a tag value of null is not the text "null".
    for value in ["~", ""] {
        let err = parse(&hosts.replace("address: null", &format!("address: {value}")), "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("spec.hosts[0].address: null where"), "{value:?}: {err}");
    }
    let tags = format!("{MINIMAL}  tags:\n    team: null\n");
    let err = parse(&tags, "t.yaml").unwrap_err().to_string();
    assert!(err.starts_with("t.yaml:8:5: spec.tags.team: null where"), "{err}");
    // In a flow mapping the line is not told apart: the field path says where.
    let flow = hosts.replace(
        "    - name: m1\n      role: master\n      identityFile: k\n      address: null\n",
        "    - {name: m1, role: master, identityFile: k, address: null}\n    - {name: m2, role: master, identityFile: k, address: null}\n",
    );
    let err = parse(&flow, "t.yaml").unwrap_err().to_string();
    assert!(err.starts_with("t.yaml: spec.hosts[0].address: null where"), "{err}");
    // Quoted, it is the word, which is what the user wrote; an optional field may be null.
    let quoted = hosts.replace("address: null", "address: 'null'");
    assert_eq!(parse(&quoted, "t.yaml").unwrap().spec.hosts.unwrap()[0].address, "null");
    assert!(parse(&format!("{MINIMAL}  region: null\n"), "t.yaml").is_ok());
    // EcsService documents go through the same check (apiVersion: null was accepted).
    let ecs = "apiVersion: null\nkind: EcsService\nmetadata:\n  name: web\nspec:\n  cluster: apps\n  image: nginx\n  network:\n    subnets: [subnet-1]\n    securityGroups: [sg-1]\n";
    let err = parse_kind::<ecs::EcsServiceSpec>(ecs, "s.yaml", "EcsService", "")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("s.yaml:1:1: apiVersion: null where a string is required"),
        "{err}"
    );
}

#[test]
fn unknown_field_reports_line_and_column() {
    let text = format!("{MINIMAL}  netwrk: {{}}\n");
    let err = parse(&text, "t.yaml").unwrap_err().to_string();
    assert!(err.starts_with("t.yaml:7:3: spec: unknown field `netwrk`"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    assert!(!err.contains(" at line "), "{err}");
}

#[test]
fn wrong_type_reports_field_and_position() {
    let text = format!("{MINIMAL}  controlPlane:\n    count: three\n");
    let err = parse(&text, "t.yaml").unwrap_err().to_string();
    assert!(
        err.starts_with("t.yaml:8:12: spec.controlPlane.count: invalid type"),
        "{err}"
    );
}

#[test]
fn bad_yaml_syntax_reports_position() {
    let err = parse("apiVersion: [\n", "t.yaml").unwrap_err().to_string();
    assert!(err.starts_with("t.yaml:"), "{err}");
}

#[test]
fn other_kind_is_named() {
    let err = parse("apiVersion: kforge.dev/v1alpha1\nkind: EcsService\n", "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected `Cluster`, found `EcsService`"), "{err}");
}

#[test]
fn schema_lists_fields() {
    let schema = json_schema().to_string();
    assert!(schema.contains("natGateways"));
    assert!(schema.contains("kubernetesVersion"));
}

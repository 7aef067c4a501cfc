//! The committed CRD (top-level `crds/` and the chart's copy) is what the
//! code generates; regenerate with `teledrop crd > crds/retentionpolicies.teledrop.dev.yaml`
//! and copy it to `charts/teledrop/crds/`.

#[test]
fn committed_crds_match_the_code() {
    let generated = teledrop_retention::crd_yaml();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for path in [
        "crds/retentionpolicies.teledrop.dev.yaml",
        "charts/teledrop/crds/retentionpolicies.teledrop.dev.yaml",
    ] {
        let committed = std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            committed == generated,
            "{path} differs from `teledrop crd`; regenerate it:\n  cargo run -p teledrop -- crd > crds/retentionpolicies.teledrop.dev.yaml && cp crds/retentionpolicies.teledrop.dev.yaml charts/teledrop/crds/"
        );
    }
}

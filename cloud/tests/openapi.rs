//! The checked-in OpenAPI document is the generated one.

#[test]
fn checked_in_openapi_document_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    let fresh = edgefn_cloud::openapi::document();
    if std::env::var_os("EDGEFN_BLESS").is_some() {
        std::fs::write(path, &fresh).expect("write");
    }
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        on_disk == fresh,
        "cloud/openapi.json is stale: regenerate it with `EDGEFN_BLESS=1 cargo test -p edgefn-cloud --test openapi`"
    );
    let doc: serde_json::Value = serde_json::from_str(&fresh).expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(
        doc["components"]["schemas"]["DesiredState"].is_object(),
        "nested types are defined"
    );
}

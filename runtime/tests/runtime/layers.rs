//! Dependency layers: a function imports packages from its layer through the interpreter's own
//! search path (python's `PYTHONPATH` after its own folder, node's `NODE_PATH`), in the process
//! sandbox and in a container, where the layer is mounted read-only at `/layer`.

use std::path::Path;

use edgefn_runtime::{Event, LogSink, Payload, Pool, PoolOptions, Sandbox};
use edgefn_schema::Runtime;
use serde_json::json;

use crate::common::*;

const MAIN_PY: &str = r#"import os, deplib, shadowed

def handle(event, context):
    try:
        with open(os.path.join(os.path.dirname(deplib.__file__), "written"), "w") as f:
            f.write("x")
        wrote = True
    except OSError:
        wrote = False
    return {"dep": deplib.VALUE, "shadowed": shadowed.WHO, "wrote": wrote,
            "path": os.environ["PYTHONPATH"]}
"#;

const INDEX_JS: &str = r#"const dep = require('deplib');
exports.handle = () => ({ dep: dep.value, path: process.env.NODE_PATH });
"#;

/// A layer folder with a python module, a node package, and a module the bundle shadows.
fn layer() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("layer");
    let p = dir.path();
    std::fs::write(p.join("deplib.py"), "VALUE = 'from the layer'\n").expect("write");
    std::fs::write(p.join("shadowed.py"), "WHO = 'layer'\n").expect("write");
    std::fs::create_dir_all(p.join("node_modules/deplib")).expect("mkdir");
    std::fs::write(
        p.join("node_modules/deplib/index.js"),
        "exports.value = 'from the node layer';\n",
    )
    .expect("write");
    dir
}

async fn run(
    sandbox: &Sandbox,
    runtime: Runtime,
    handler: &str,
    bundle_dir: &Path,
    layer_dir: &Path,
) -> serde_json::Value {
    let mut spec = lang_spec(runtime, handler, bundle_dir);
    spec.layer_dir = Some(layer_dir.to_path_buf());
    let pool =
        Pool::start(spec, PoolOptions::default(), sandbox, LogSink::discard()).expect("pool");
    let r = pool.invoke(&Event::json("t", json!({}))).await;
    pool.stop().await;
    match r.expect("invoked").result {
        Payload::Json(v) => v,
        other => panic!("not JSON: {other:?}"),
    }
}

#[tokio::test]
async fn functions_import_from_their_layer_in_a_process_sandbox() {
    let layer = layer();
    let code = bundle(&[
        ("main.py", MAIN_PY),
        ("shadowed.py", "WHO = 'bundle'\n"),
        ("index.js", INDEX_JS),
    ]);
    let sandbox = Sandbox::process();
    let py = run(
        &sandbox,
        Runtime::Python3,
        "main.handle",
        code.path(),
        layer.path(),
    )
    .await;
    assert_eq!(py["dep"], "from the layer");
    assert_eq!(
        py["shadowed"], "bundle",
        "the function's own folder comes first"
    );
    assert_eq!(py["path"], layer.path().display().to_string());
    let js = run(
        &sandbox,
        Runtime::Node,
        "index.handle",
        code.path(),
        layer.path(),
    )
    .await;
    assert_eq!(js["dep"], "from the node layer");
    assert_eq!(
        js["path"],
        layer.path().join("node_modules").display().to_string()
    );
}

#[tokio::test]
async fn a_container_mounts_the_layer_read_only() {
    let Some((sandbox, _state)) = crate::container::container() else {
        return;
    };
    let layer = layer();
    let code = bundle(&[
        ("main.py", MAIN_PY),
        ("shadowed.py", "WHO = 'bundle'\n"),
        ("index.js", INDEX_JS),
    ]);
    let py = run(
        &sandbox,
        Runtime::Python3,
        "main.handle",
        code.path(),
        layer.path(),
    )
    .await;
    assert_eq!(
        py,
        json!({"dep": "from the layer", "shadowed": "bundle", "wrote": false, "path": "/layer"})
    );
    assert!(!layer.path().join("written").exists());
    let js = run(
        &sandbox,
        Runtime::Node,
        "index.handle",
        code.path(),
        layer.path(),
    )
    .await;
    assert_eq!(
        js,
        json!({"dep": "from the node layer", "path": "/layer/node_modules"})
    );
}

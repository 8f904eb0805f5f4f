//! Models: a function finds the models its binding names at `$EDGEFN_MODEL_<NAME>` and in
//! `$EDGEFN_MODELS_DIR` (a folder of links in the process sandbox; read-only mounts at
//! `/models/NAME` in a container, where no other model is visible), and a warm instance keeps
//! what it loaded at import across invocations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use edgefn_runtime::{Event, FunctionSpec, LogSink, Payload, Pool, PoolOptions, Sandbox};
use edgefn_schema::Runtime;
use serde_json::json;

use crate::common::*;

const MAIN_PY: &str = r#"import os

LOADS = 0
CALLS = 0
with open(os.environ["EDGEFN_MODEL_DIGITS_V2"], "rb") as f:
    WEIGHTS = f.read()
LOADS += 1


def handle(event, context):
    global CALLS
    CALLS += 1
    path = os.environ["EDGEFN_MODEL_DIGITS_V2"]
    try:
        with open(path, "ab") as f:
            f.write(b"x")
        wrote = True
    except OSError:
        wrote = False
    return {"weights": WEIGHTS.decode(), "loads": LOADS, "calls": CALLS, "pid": os.getpid(),
            "path": path, "dir": os.environ["EDGEFN_MODELS_DIR"],
            "listed": sorted(os.listdir(os.environ["EDGEFN_MODELS_DIR"])),
            "wrote": wrote, "other": os.path.exists("/models/other")}
"#;

/// The model file, and a folder of links to it named `digits-v2` (what the agent makes).
fn model() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("model");
    let file = dir.path().join("weights.bin");
    std::fs::write(&file, "the weights").expect("write");
    let links = dir.path().join("links");
    std::fs::create_dir(&links).expect("mkdir");
    std::os::unix::fs::symlink(&file, links.join("digits-v2")).expect("link");
    (dir, file, links)
}

fn spec(code: &Path, file: &Path, links: &Path) -> FunctionSpec {
    let mut spec = lang_spec(Runtime::Python3, "main.handle", code);
    spec.models = BTreeMap::from([("digits-v2".to_owned(), file.to_path_buf())]);
    spec.models_dir = Some(links.to_path_buf());
    spec
}

async fn calls(sandbox: &Sandbox, spec: FunctionSpec, n: usize) -> Vec<serde_json::Value> {
    let pool =
        Pool::start(spec, PoolOptions::default(), sandbox, LogSink::discard()).expect("pool");
    let mut out = Vec::new();
    for _ in 0..n {
        let r = pool.invoke(&Event::json("t", json!({}))).await;
        match r.expect("invoked").result {
            Payload::Json(v) => out.push(v),
            other => panic!("not JSON: {other:?}"),
        }
    }
    pool.stop().await;
    out
}

#[tokio::test]
async fn a_warm_instance_loads_its_model_once_for_every_invocation() {
    let (_dir, file, links) = model();
    let code = bundle(&[("main.py", MAIN_PY)]);
    let r = calls(&Sandbox::process(), spec(code.path(), &file, &links), 4).await;
    for (i, v) in r.iter().enumerate() {
        assert_eq!(v["weights"], "the weights", "{v}");
        assert_eq!(v["loads"], 1, "loaded once: {v}");
        assert_eq!(v["calls"], i as u64 + 1, "{v}");
        assert_eq!(v["pid"], r[0]["pid"], "one warm instance");
    }
    assert_eq!(r[0]["path"], file.display().to_string());
    assert_eq!(r[0]["dir"], links.display().to_string());
    assert_eq!(r[0]["listed"], json!(["digits-v2"]));
}

#[tokio::test]
async fn a_container_mounts_only_its_models_read_only_at_models() {
    let Some((sandbox, _state)) = crate::container::container() else {
        return;
    };
    let (_dir, file, links) = model();
    let code = bundle(&[("main.py", MAIN_PY)]);
    // An instance of another binding, with a model named `other`, ran before in the same
    // container root: its model's mount point must not show in the next container.
    let mut before = spec(code.path(), &file, &links);
    before.models.insert("other".into(), file.clone());
    let r = calls(&sandbox, before, 1).await;
    assert_eq!(r[0]["other"], true, "{}", r[0]);
    let r = calls(&sandbox, spec(code.path(), &file, &links), 2).await;
    let v = &r[1];
    assert_eq!(v["weights"], "the weights", "{v}");
    assert_eq!(
        (v["loads"].as_u64(), v["calls"].as_u64()),
        (Some(1), Some(2)),
        "{v}"
    );
    assert_eq!(v["path"], "/models/digits-v2");
    assert_eq!(v["dir"], "/models");
    assert_eq!(v["listed"], json!(["digits-v2"]));
    assert_eq!(v["wrote"], false, "read-only: {v}");
    assert_eq!(v["other"], false);
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        "the weights",
        "the model is unchanged"
    );
}

//! Prints the inputs and outputs of a model in the store: `cargo run --example inspect_io -- MODEL FILE`.
use antiphon_models::{onnx, store::ModelStore};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let store = ModelStore::from_env()?;
    let env = onnx::environment(&store)?;
    let path = store.file(&args[1], &args[2])?;
    let session = onnx::session(&env, &path, 1)?;
    for i in session.inputs() {
        println!("in  {} {:?}", i.name(), i.dtype());
    }
    for o in session.outputs() {
        println!("out {} {:?}", o.name(), o.dtype());
    }
    let over = session.overridable_initializers();
    println!("overridable initializers: {}", over.len());
    for o in over.iter().take(5) {
        println!("  {}", o.name());
    }
    Ok(())
}

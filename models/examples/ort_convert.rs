//! Experiment: can onnxruntime save an ORT-format model as ONNX?
use antiphon_models::{onnx, store::ModelStore};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let store = ModelStore::from_env()?;
    let env = onnx::environment(&store)?;
    let path = store.file(&args[1], &args[2])?;
    let _s = Session::builder(&env)?
        .with_optimization_level(GraphOptimizationLevel::Level1)?
        .with_optimized_model_path(&args[3])?
        .commit_from_file(&path)?;
    println!("saved {}", args[3]);
    Ok(())
}

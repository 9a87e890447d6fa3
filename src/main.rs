use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = skiff::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("SKIFF_LOG").unwrap_or_else(|_| {
            EnvFilter::new("info,aws_config=error,aws_smithy_runtime=warn,hyper=warn")
        }))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .compact()
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match rt.block_on(skiff::cli::main(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("skiff: {e:#}");
            2
        }
    };
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
}

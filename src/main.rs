use clap::Parser;
use tracing_subscriber::EnvFilter;

/// `skiff … | head` closes stdout early: Rust reports that as a panic in
/// `println!`; end quietly instead, with the status a shell gives a process
/// ended by SIGPIPE. (SIGPIPE itself stays ignored, so a closed socket is an
/// error to handle, never a silent death.)
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
            std::process::exit(141);
        }
        default(info)
    }));
}

fn main() {
    quiet_on_closed_stdout();
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
    let code = rt.block_on(async {
        let code = match skiff::cli::main(cli).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("skiff: {e:#}");
                2
            }
        };
        // What stopped copies left to clean up (an incomplete snapshot) ends first.
        skiff::mover::cleanups::settle(std::time::Duration::from_secs(60)).await;
        code
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
}

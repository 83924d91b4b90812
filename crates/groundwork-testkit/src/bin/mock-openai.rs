//! `mock-openai`: serves groundwork-testkit's fake OpenAI-compatible upstream
//! ([`MockOpenAi`]) for load tests and benchmarks, until Ctrl-C.
//!
//! ```text
//! mock-openai --bind 127.0.0.1:9000 --latency-ms 20 --chunks 8
//! ```
//!
//! It prints its base URL (e.g. `http://127.0.0.1:9000/v1`) on one line once it listens, and
//! logs nothing per request. Its delays are kept to the tens of microseconds
//! ([`MockOptions::precise_timing`]), not rounded up to Tokio's millisecond ticks, so that a
//! load test comparing latencies through it is not skewed by the rounding.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use groundwork_testkit::openai::{MockOpenAi, MockOptions};

const USAGE: &str = "\
Usage: mock-openai [OPTIONS]

Serves a fake OpenAI-compatible POST /v1/chat/completions (answers `echo: <last user
message>`, plain or streamed) until Ctrl-C, and prints its base URL. GET /mock/connections
answers its connection counters as JSON (accepted, open, peak_open, closed), POST
/mock/connections/reset-peak starts the peak again.

Options:
  --bind <ADDR>               Address to listen on [default: 127.0.0.1:9000]
  --latency-ms <MS>           Delay before the response headers [default: 0]
  --first-byte-delay-ms <MS>  Streams: delay between the headers and the first event [default: 0]
  --chunk-delay-ms <MS>       Streams: delay between two events [default: 0]
  --chunks <N>                Streams: content chunks [default: 4]
  --threads <N>               Runtime worker threads [default: one per core]
  -h, --help                  Print this help
";

/// The parsed command line.
struct Args {
    options: MockOptions,
    threads: Option<usize>,
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("mock-openai: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads);
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("mock-openai: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let mock = match MockOpenAi::start_with(args.options) {
            Ok(mock) => mock,
            Err(err) => {
                eprintln!("mock-openai: cannot listen: {err}");
                return ExitCode::FAILURE;
            }
        };
        println!("{}", mock.base_url());
        if let Err(err) = tokio::signal::ctrl_c().await {
            eprintln!("mock-openai: cannot wait for Ctrl-C: {err}");
            return ExitCode::FAILURE;
        }
        ExitCode::SUCCESS
    })
}

/// Parses the options (`--name value` or `--name=value`); `None` when help is asked for.
fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut options = MockOptions::new()
        .bind(SocketAddr::from(([127, 0, 0, 1], 9000)))
        .precise_timing(true);
    let mut threads = None;
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        options = match name.as_str() {
            "--bind" => options.bind(parsed(&name, &value()?)?),
            "--latency-ms" => options.latency(millis(&name, &value()?)?),
            "--first-byte-delay-ms" => options.first_byte_delay(millis(&name, &value()?)?),
            "--chunk-delay-ms" => options.chunk_delay(millis(&name, &value()?)?),
            "--chunks" => options.chunks(parsed(&name, &value()?)?),
            "--threads" => {
                threads = Some(parsed::<usize>(&name, &value()?)?.max(1));
                options
            }
            _ => return Err(format!("unknown argument {name}")),
        };
    }
    Ok(Some(Args { options, threads }))
}

/// Parses the value of option `name`.
fn parsed<T: FromStr>(name: &str, value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|err| format!("invalid value {value:?} for {name}: {err}"))
}

/// Parses a value of option `name` in milliseconds.
fn millis(name: &str, value: &str) -> Result<Duration, String> {
    parsed(name, value).map(Duration::from_millis)
}

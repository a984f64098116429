//! The `switchyard` command line.

use std::collections::HashMap;
use std::io::{BufReader, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::{LimitsConfig, OnFailure, Property, RecordFormat, RetryConfig, RouteConfig};
use crate::offline::{self, GivenTopics};
use crate::plugin::{ArtifactCache, Limits, PluginEngine, RouteContext};
use crate::route::Route;

/// Kafka message router with hot-swappable WebAssembly routing plugins.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    /// Log line format on stderr: `text` for people, `json` (one object
    /// per line) for log collectors.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "SWITCHYARD_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// What `switchyard ctl` asks a router to do.
#[derive(Debug, Subcommand)]
enum CtlAction {
    /// Stop routing a route: its partitions stay assigned, nothing of them
    /// is routed or committed, `/ready` says why.
    Pause {
        /// The route's name.
        route: String,
    },
    /// Route a paused route again, from where it stopped.
    Resume {
        /// The route's name.
        route: String,
    },
    /// Return a route to an earlier plugin version the router ran (kept in
    /// memory, no file needed): the one before the version routing now, or
    /// --to. The plugin file's version is not swapped in again until the
    /// file changes. While a rollout candidate is tried (and without --to),
    /// roll the candidate back instead: the live version routes
    /// everything, and the candidate is not tried again until its file
    /// changes.
    Rollback {
        /// The route's name.
        route: String,
        /// The version to return to (as `/routes` lists it).
        #[arg(long, value_name = "VERSION")]
        to: Option<String>,
    },
    /// Make the rollout candidate tried now the route's version, for every
    /// partition.
    Promote {
        /// The route's name.
        route: String,
    },
    /// Set how many partitions of each source topic (the lowest numbered)
    /// a canary candidate routes.
    Canary {
        /// The route's name.
        route: String,
        /// The number of partitions.
        #[arg(long)]
        partitions: u32,
    },
    /// Show the records a shadow candidate decided differently from the
    /// live version (the latest 20), with the counts.
    Shadow {
        /// The route's name.
        route: String,
    },
    /// Route a route's records again, from an offset or a time up to where
    /// its partitions end now, into one topic, while the route goes on (a
    /// consumer of its own: the group's offsets are not touched). Prints
    /// the replay's number; `ctl replays` shows how far it got.
    Replay {
        /// The route's name.
        route: String,
        /// The topic every output goes to (no route may read it).
        #[arg(long, value_name = "TOPIC")]
        to: String,
        /// Start at this offset of each partition.
        #[arg(
            long,
            value_name = "OFFSET",
            conflicts_with = "from_timestamp_ms",
            required_unless_present = "from_timestamp_ms"
        )]
        from_offset: Option<i64>,
        /// Start at the first record at or after this time (milliseconds
        /// since the Unix epoch: `date -d '1 day ago' +%s%3N`).
        #[arg(long, value_name = "MS")]
        from_timestamp_ms: Option<i64>,
        /// Only this partition of the route's source topics.
        #[arg(long)]
        partition: Option<i32>,
    },
    /// Show the replays started and how far they got.
    Replays,
    /// Stop a running replay.
    CancelReplay {
        /// The replay's number.
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// See it work with nothing to set up: an embedded Kafka, a sample
    /// workload routed through the example plugins, and a summary.
    Demo {
        /// Where the example plugins were built.
        #[arg(
            long,
            default_value = "plugins/target/wasm32-wasip2/release",
            value_name = "DIR"
        )]
        plugins_dir: PathBuf,
    },
    /// Route Kafka traffic as the configuration file says, until SIGTERM or
    /// Ctrl-C.
    Run {
        /// The router's configuration file (TOML).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a configuration file as `run` would before consuming: the
    /// configuration, every route's plugin compiled and `init`-ed with the
    /// route's configuration, and with --broker the topics on the cluster.
    /// One line per problem; exit 0 if there is none.
    Validate {
        /// The router's configuration file (TOML).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Also connect to Kafka (`kafka.bootstrap_servers`) and check that
        /// the topics the routes read and write exist.
        #[arg(long)]
        broker: bool,
    },
    /// Load a plugin, check it against the plugin contract and run its
    /// `init`; print what it is. Exit 0 if the router could use it.
    Check {
        #[command(flatten)]
        plugin: PluginArgs,
    },
    /// Ask a running router whether it is alive (`/health`) or ready
    /// (`/ready`); exit 0 if so. For container health checks: no HTTP
    /// client needed in the image.
    Health {
        /// The router's `http.listen` address.
        #[arg(long, default_value = "127.0.0.1:9180", value_name = "HOST:PORT")]
        addr: String,
        /// Ask `/ready` instead of `/health`.
        #[arg(long)]
        ready: bool,
    },
    /// Tell a running router what to do, through its control endpoints
    /// (on when its `http.control_token_env` names a token). Prints the
    /// router's answer; exit 0 if it did it.
    Ctl {
        /// The router's `http.listen` address.
        #[arg(long, default_value = "127.0.0.1:9180", value_name = "HOST:PORT")]
        addr: String,
        /// The environment variable holding the router's control token.
        #[arg(long, default_value = "SWITCHYARD_CONTROL_TOKEN", value_name = "VAR")]
        token_env: String,
        #[command(subcommand)]
        action: CtlAction,
    },
    /// Route records from JSON lines through a plugin, with no Kafka: one
    /// JSON line out per record, with its outputs or its error.
    Route {
        #[command(flatten)]
        plugin: PluginArgs,
        /// File of JSON-lines records; `-` is standard input.
        #[arg(long, short, default_value = "-", value_name = "FILE|-")]
        input: String,
    },
    /// Start a plugin project: the SDK dependency, a plugin that forwards
    /// records, its unit tests, a sample input and a README.
    New {
        /// The plugin's name (lowercase letters, digits, `-`, `_`); also
        /// the folder it is written to, unless --dir says otherwise.
        name: String,
        /// The language to write it in.
        #[arg(long, value_enum)]
        lang: crate::project::Lang,
        /// Write it to this folder instead of ./NAME.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Build a plugin project (Rust, Python or TypeScript) into a
    /// component with its language's tools; print the component's path as
    /// the last line on stdout.
    Build {
        /// The project's folder.
        #[arg(default_value = ".", value_name = "DIR")]
        dir: PathBuf,
        /// Write the component here instead of the project's target/.
        #[arg(long, short, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct PluginArgs {
    /// The plugin's `.wasm` file.
    plugin: PathBuf,
    /// A plugin configuration entry (the route's `plugin_config`); repeat
    /// for several.
    #[arg(long = "config", short = 'c', value_name = "KEY=VALUE", value_parser = key_value)]
    config: Vec<(String, String)>,
    /// The route's default target topic.
    #[arg(long, default_value = "output", value_name = "TOPIC")]
    target: String,
    /// Partition count of a topic, as the plugin's `partition-count` sees
    /// it; repeat for several.
    #[arg(long = "partitions", short = 'p', value_name = "TOPIC=N", value_parser = topic_partitions)]
    partitions: Vec<(String, u32)>,
    /// A topic outputs may go to, `*` matching any run of characters (the
    /// route's `allowed_targets`); repeat for several. Without it, only
    /// the default target, as in `switchyard run`.
    #[arg(long = "allow", value_name = "PATTERN")]
    allow: Vec<String>,
    /// A directory of schemas by ID (as `[schemas] dir`): record values
    /// are then read by schema (`--value-format`), and the plugin may
    /// write with these schemas.
    #[arg(long, value_name = "DIR")]
    schemas: Option<PathBuf>,
    /// How record values are written (the route's `value_format`);
    /// default: `schema-registry` with --schemas, else `bytes`.
    #[arg(long, value_enum, value_name = "FORMAT")]
    value_format: Option<Format>,
    /// How record keys are written (the route's `key_format`).
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "bytes")]
    key_format: Format,
}

/// A record part's format on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// Bytes the router does not read.
    Bytes,
    /// A schema registry's wire format, read by schema (needs --schemas).
    SchemaRegistry,
}

impl From<Format> for RecordFormat {
    fn from(format: Format) -> Self {
        match format {
            Format::Bytes => Self::Bytes,
            Format::SchemaRegistry => Self::SchemaRegistry,
        }
    }
}

fn key_value(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got '{arg}'")),
    }
}

fn topic_partitions(arg: &str) -> Result<(String, u32), String> {
    let (topic, n) = key_value(arg).map_err(|_| format!("expected TOPIC=N, got '{arg}'"))?;
    match n.parse::<u32>() {
        Ok(n) if n > 0 => Ok((topic, n)),
        _ => Err(format!(
            "partition count of '{topic}' must be a positive integer, got '{n}'"
        )),
    }
}

/// Parses the command line, runs the command, and turns any error into a
/// message on stderr and exit code 1.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints a summary; routine log lines would bury it.
    let default = if matches!(cli.command, Command::Demo { .. }) {
        "warn"
    } else {
        "info"
    };
    init_logging(default, cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        // Fields at the top level of each object, where collectors look.
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

/// The engine, with compiled plugins cached on disk when a cache folder
/// can be found (see [`ArtifactCache::default_dir`]).
fn plugin_engine() -> anyhow::Result<PluginEngine> {
    let engine = PluginEngine::new()?;
    Ok(match ArtifactCache::default_dir() {
        Some(dir) => engine.with_cache(ArtifactCache::new(dir)),
        None => engine,
    })
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config } => run_router(&config),
        Command::Demo { plugins_dir } => {
            crate::demo::run(&plugins_dir, &plugin_engine()?).map(|()| ExitCode::SUCCESS)
        }
        Command::Check { plugin } => check(&plugin),
        Command::Validate { config, broker } => {
            let report = crate::validate::validate(&config, &plugin_engine()?, broker);
            for line in &report.checked {
                println!("ok: {line}");
            }
            for problem in &report.problems {
                eprintln!("{problem}");
            }
            if report.problems.is_empty() {
                println!("valid");
                Ok(ExitCode::SUCCESS)
            } else {
                let n = report.problems.len();
                eprintln!("{n} problem{}", if n == 1 { "" } else { "s" });
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Route { plugin, input } => route(&plugin, &input),
        Command::New { name, lang, dir } => {
            let sdks = crate::project::Sdks::locate()?;
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let dir = crate::project::new_project(&name, lang, &dir, &sdks)?;
            let shown = dir.display();
            let test = match lang {
                crate::project::Lang::Rust => "cargo test",
                crate::project::Lang::Python => "pytest",
                crate::project::Lang::Typescript => "npm install && npm test",
            };
            println!("wrote the {lang} plugin project '{name}' to {shown}");
            println!("next: cd {shown} && {test} && switchyard build");
            Ok(ExitCode::SUCCESS)
        }
        Command::Build { dir, out } => {
            let options = crate::project::BuildOptions { out };
            let component = crate::project::build(&dir, &options)?;
            println!("{}", component.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Ctl {
            addr,
            token_env,
            action,
        } => {
            let token = std::env::var(&token_env).with_context(|| {
                format!(
                    "the environment variable '{token_env}' (the router's control token) is not set"
                )
            })?;
            let path = match &action {
                CtlAction::Pause { route } => format!("/routes/{route}/pause"),
                CtlAction::Resume { route } => format!("/routes/{route}/resume"),
                CtlAction::Rollback { route, to: None } => format!("/routes/{route}/rollback"),
                CtlAction::Rollback {
                    route,
                    to: Some(version),
                } => format!("/routes/{route}/rollback/{version}"),
                CtlAction::Promote { route } => format!("/routes/{route}/promote"),
                CtlAction::Canary { route, partitions } => {
                    format!("/routes/{route}/canary/{partitions}")
                }
                CtlAction::Shadow { route } => format!("/routes/{route}/shadow"),
                CtlAction::Replay {
                    route,
                    to,
                    from_offset,
                    from_timestamp_ms,
                    partition,
                } => {
                    let from = match (from_offset, from_timestamp_ms) {
                        (Some(offset), _) => format!("from_offset={offset}"),
                        (None, Some(ms)) => format!("from_timestamp_ms={ms}"),
                        (None, None) => bail!("give --from-offset or --from-timestamp-ms"),
                    };
                    let only = partition.map_or_else(String::new, |p| format!("&partition={p}"));
                    format!("/routes/{route}/replay?to={to}&{from}{only}")
                }
                CtlAction::Replays => "/replays".to_owned(),
                CtlAction::CancelReplay { id } => format!("/replays/{id}/cancel"),
            };
            let method = match action {
                CtlAction::Shadow { .. } | CtlAction::Replays => "GET",
                _ => "POST",
            };
            let (ok, body) = request(&addr, method, &path, Some(&token))?;
            println!("{body}");
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Health { addr, ready } => {
            let path = if ready { "/ready" } else { "/health" };
            let (ok, body) = request(&addr, "GET", path, None)?;
            println!("{body}");
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// `method path` on `addr` over plain HTTP/1.1 (with `token` as a bearer
/// token): whether it answered 200, and the body. A dozen lines of std beat
/// an HTTP client dependency here.
fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(bool, String)> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let timeout = std::time::Duration::from_secs(5);
    let socket = addr
        .to_socket_addrs()
        .with_context(|| format!("bad address '{addr}'"))?
        .next()
        .with_context(|| format!("'{addr}' resolves to nothing"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&socket, timeout)
        .with_context(|| format!("cannot reach the router at {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    let authorization =
        token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("no answer from {addr}{path}"))?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let ok = head.split_whitespace().nth(1) == Some("200");
    Ok((ok, body.to_owned()))
}

impl PluginArgs {
    fn topics(&self) -> GivenTopics {
        GivenTopics(self.partitions.iter().cloned().collect::<HashMap<_, _>>())
    }

    fn instantiate(&self) -> anyhow::Result<crate::plugin::PluginInstance> {
        let engine = plugin_engine()?;
        let plugin = engine.load(&self.plugin)?;
        let context = RouteContext::new(
            "offline".to_owned(),
            self.target.clone(),
            Arc::new(self.topics()),
        );
        Ok(plugin.instantiate(&self.config, context, Limits::default())?)
    }

    /// The route `switchyard run` would have with these arguments: its
    /// plugin, configuration, target and allowed targets, default limits.
    fn route(&self) -> anyhow::Result<crate::route::RouteInstance> {
        let engine = plugin_engine()?;
        let plugin = engine.load(&self.plugin)?;
        let config = RouteConfig {
            name: "offline".to_owned(),
            source_topics: vec!["input".to_owned()],
            plugin: Some(self.plugin.clone()),
            default_target: self.target.clone(),
            allowed_targets: self.allow.clone(),
            plugin_config: self
                .config
                .iter()
                .map(|(k, v)| (k.clone(), Property::Text(v.clone())))
                .collect(),
            limits: LimitsConfig::default(),
            dead_letter_topic: None,
            on_failure: Some(OnFailure::Skip),
            retry: RetryConfig::default(),
            value_format: self
                .value_format
                .unwrap_or(if self.schemas.is_some() {
                    Format::SchemaRegistry
                } else {
                    Format::Bytes
                })
                .into(),
            key_format: self.key_format.into(),
            // Offline: a directory, no registry to register in.
            register_schemas: false,
            rollout: None,
        };
        if config.uses_schemas() && self.schemas.is_none() {
            bail!("--value-format or --key-format schema-registry needs --schemas DIR");
        }
        if !config.allowed_targets.is_empty() && !config.allows(&config.default_target) {
            bail!(
                "--allow does not match the default target '{}' (--target)",
                config.default_target
            );
        }
        let mut route = Route::new(config, Some(plugin), Arc::new(self.topics()));
        if let Some(dir) = &self.schemas {
            let dir = crate::schema::dir::SchemaDir::open(dir)?;
            let store = crate::schema::store::SchemaStore::new(Some(dir), None, None);
            route = route.with_schemas(Arc::new(store));
        }
        Ok(Arc::new(route).instance()?)
    }
}

fn run_router(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = crate::config::RouterConfig::load(path)?;
    let engine = plugin_engine()?;
    let router = crate::router::start(
        &config,
        &engine,
        Arc::new(crate::pipeline::LogFailures::default()),
    )?;
    tracing::info!(routes = config.routes.len(), group = %config.kafka.group_id, "routing");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal handler")?
        .block_on(async {
            tokio::select! {
                signal = shutdown_signal() => signal,
                () = stopped_by_itself(&router) => Ok(()),
            }
        })?;
    if let Some(reason) = router.fatal() {
        router.join();
        bail!("the router stopped: {reason}");
    }
    tracing::info!("shutting down: finishing records in flight");
    router.shutdown();
    // The drain waits at most shutdown.timeout_ms for outputs; leaving the
    // group gets a little more. Past that, exit anyway: what was not
    // committed is consumed again after the restart.
    let deadline = config.shutdown.timeout() + std::time::Duration::from_secs(5);
    let (done, stopped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        router.join();
        let _ = done.send(());
    });
    if stopped.recv_timeout(deadline).is_err() {
        tracing::error!(
            deadline = ?deadline,
            "the router did not stop in time (shutdown.timeout_ms): exiting; records not committed will be consumed again"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves when the router stopped without being asked (a fatal error).
async fn stopped_by_itself(router: &crate::router::RouterHandle) {
    while router.is_running() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn check(args: &PluginArgs) -> anyhow::Result<ExitCode> {
    let instance = args.instantiate()?;
    let plugin = instance.plugin();
    println!("plugin:   {}", plugin.path().display());
    println!("version:  {}", plugin.version());
    println!("sha256:   {}", plugin.sha256());
    println!("size:     {} bytes", plugin.size());
    println!("exports:  {}", plugin.exports().join(", "));
    println!("imports:  {}", plugin.imports().join(", "));
    println!("init:     ok ({} config entries)", args.config.len());
    Ok(ExitCode::SUCCESS)
}

fn route(args: &PluginArgs, input: &str) -> anyhow::Result<ExitCode> {
    let mut instance = args.route()?;
    let stdout = std::io::stdout().lock();
    let summary = if input == "-" {
        offline::route_lines(&mut instance, std::io::stdin().lock(), stdout)
    } else {
        let file =
            std::fs::File::open(input).with_context(|| format!("cannot open input '{input}'"))?;
        offline::route_lines(&mut instance, BufReader::new(file), stdout)
    }
    .context("cannot write output")?;
    tracing::info!(
        routed = summary.routed,
        failed = summary.failed,
        malformed = summary.malformed,
        "route finished"
    );
    if summary.malformed > 0 {
        bail!(
            "{} input line(s) were not valid records (see the \"input\" errors above)",
            summary.malformed
        );
    }
    Ok(ExitCode::SUCCESS)
}

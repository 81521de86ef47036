//! `enforcer run`: the node agent (`docs/agent.md`).
//!
//! Settings come from flags, `ENFORCER_*` variables and an optional YAML file (`--config`), in
//! that order of precedence ([`enforcer_user::agent::config`]). The agent opens (or adopts) the
//! pinned datapath, starts the source, the metrics/health server and the flow log, and runs
//! until SIGTERM or SIGINT. On exit the programs stay attached and keep enforcing the last
//! tables (`--detach-on-exit` detaches the interfaces this agent attached).
//!
//! Exit status: 0 after a signal; 2 for bad settings or when the datapath cannot be opened.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context as _;
use clap::Args;
use enforcer_user::{
    agent::{
        Agent, AgentOptions,
        config::{AgentConfig, ConfigLayer, LogFormat, PortList, SourceConfig, env_name},
        endpoints::Selector,
        state,
        status::AgentStatus,
    },
    datapath::{Datapath, OpenOptions},
    evaluator, observe,
    sources::{self, kubernetes::KubernetesOptions},
};

use super::EXIT_BAD_INPUT;

/// Flags of `enforcer run`. Every flag is also `ENFORCER_<NAME>` in the environment and
/// `<name>:` in the config file; flags win over the environment, which wins over the file.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// YAML file of settings (`policy-dir: /etc/enforcer/policy`, ...: the names of these
    /// flags). [env: ENFORCER_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of policy YAML to enforce, watched for changes (the standalone source).
    #[arg(long, value_name = "DIR")]
    pub policy_dir: Option<PathBuf>,
    /// Watch the Kubernetes API server instead of a directory.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub kubernetes: Option<bool>,
    /// Kubeconfig for --kubernetes [default: in-cluster, then KUBECONFIG or ~/.kube/config].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name: pods whose spec.nodeName is another node are not enforced here.
    /// [env: NODE_NAME too]
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Prefix of the host-side interfaces of pods [default: cali].
    #[arg(long, value_name = "PREFIX")]
    pub interface_prefix: Option<String>,
    /// bpffs directory for the pinned programs, maps and links [default: /sys/fs/bpf/enforcer].
    #[arg(long, value_name = "DIR")]
    pub pin_base: Option<PathBuf>,
    /// Where state.json (read by `enforcer get`) goes [default: /run/enforcer].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Listen address of /metrics, /healthz and /readyz, or `off` [default: 127.0.0.1:9466].
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Denied-flow log (JSON lines), or `off` [default: STATE_DIR/flows.jsonl].
    #[arg(long, value_name = "FILE")]
    pub flow_log: Option<PathBuf>,
    /// Drop packets on an attached interface that has no endpoint entry (instead of passing).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub fail_closed: Option<bool>,
    /// Load the programs and maps afresh instead of adopting the pinned ones (links are moved
    /// to the new programs; the first sync programs the new maps).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub force_fresh: Option<bool>,
    /// On SIGTERM/SIGINT, detach from the interfaces this agent attached (default: leave
    /// them attached, so enforcement continues while the agent is down).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub detach_on_exit: Option<bool>,
    /// Ports no policy can close into host endpoints: `tcp:22,udp:68,...` or `none`
    /// [default: Calico's, tcp:22,udp:68,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667].
    #[arg(long, value_name = "LIST", value_parser = parse_ports)]
    pub failsafe_inbound: Option<PortList>,
    /// Ports no policy can close out of host endpoints [default: Calico's,
    /// udp:53,udp:67,tcp:179,tcp:2379,tcp:2380,tcp:5473,tcp:6443,tcp:6666,tcp:6667].
    #[arg(long, value_name = "LIST", value_parser = parse_ports)]
    pub failsafe_outbound: Option<PortList>,
    /// Log format [default: text].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter (`info`, `debug`, `enforcer_user=debug,info`) [default: RUST_LOG, else info].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

fn parse_ports(s: &str) -> Result<PortList, String> {
    s.parse()
}

impl RunArgs {
    fn layer(&self) -> ConfigLayer {
        ConfigLayer {
            policy_dir: self.policy_dir.clone(),
            kubernetes: self.kubernetes,
            kubeconfig: self.kubeconfig.clone(),
            node_name: self.node_name.clone(),
            interface_prefix: self.interface_prefix.clone(),
            pin_base: self.pin_base.clone(),
            state_dir: self.state_dir.clone(),
            metrics_addr: self.metrics_addr.clone(),
            flow_log: self.flow_log.clone(),
            fail_closed: self.fail_closed,
            force_fresh: self.force_fresh,
            detach_on_exit: self.detach_on_exit,
            failsafe_inbound: self.failsafe_inbound.clone(),
            failsafe_outbound: self.failsafe_outbound.clone(),
            log_format: self.log_format,
            log_level: self.log_level.clone(),
        }
    }
}

fn init_logging(cfg: &AgentConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = match &cfg.log_level {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A subscriber set earlier (tests) wins.
    let _ = match cfg.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Resolves the settings from the flags, the process environment and the config file.
fn resolve(a: &RunArgs) -> anyhow::Result<AgentConfig> {
    let (env, warnings) = ConfigLayer::from_env(std::env::vars())?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let file_path = a
        .config
        .clone()
        .or_else(|| std::env::var_os(env_name("config")).map(PathBuf::from));
    let file = match &file_path {
        Some(p) => ConfigLayer::from_file(p)?,
        None => ConfigLayer::default(),
    };
    Ok(AgentConfig::resolve(a.layer(), env, file)?)
}

pub fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let cfg = match resolve(&a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    init_logging(&cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("enforcer-agent")
        .build()
        .context("starting the tokio runtime")?;
    match rt.block_on(agent_main(cfg)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(EXIT_BAD_INPUT))
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "stopping");
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot install signal handlers; stop the agent with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

async fn agent_main(cfg: AgentConfig) -> anyhow::Result<()> {
    tracing::info!(
        source = ?cfg.source,
        node = cfg.node_name.as_deref().unwrap_or("-"),
        interface_prefix = %cfg.interface_prefix,
        pin_base = %cfg.pin_base.display(),
        state_dir = %cfg.state_dir.display(),
        fail_closed = cfg.fail_closed,
        "starting"
    );
    let dp = Datapath::open(OpenOptions {
        force_fresh: cfg.force_fresh,
        // A fresh load moves the pinned links only after the first sync programmed the new
        // maps: until then they keep enforcing the old tables.
        defer_relink: true,
        ..OpenOptions::new(&cfg.pin_base)
    })
    .context("opening the datapath")?;
    for stale in dp.stale_layouts().unwrap_or_default() {
        tracing::info!(
            version = stale.version,
            path = %stale.path.display(),
            links = stale.links,
            "a pin layout of another enforcer version is present: its programs keep enforcing \
             their last tables until this agent's first complete sync, which then removes it"
        );
    }
    let status = Arc::new(AgentStatus::new());

    // Flow log: its own handle on the events ring buffer (one reader per node).
    let flow_stats = match &cfg.flow_log {
        Some(path) => {
            let reader = dp
                .events()
                .context("opening the flow events ring buffer")?
                .into_async()
                .context("registering the flow events ring buffer with tokio")?;
            let log = observe::FlowLog::new(path);
            let stats = log.stats();
            let st = status.clone();
            let path = path.clone();
            tokio::spawn(async move {
                if let Err(e) = log.run(reader, st).await {
                    tracing::error!(error = %e, path = %path.display(), "the flow log stopped");
                }
            });
            Some(stats)
        }
        None => None,
    };

    if let Some(addr) = cfg.metrics_addr {
        let mut source = observe::MetricsSource::new(&cfg.pin_base);
        if let Some(stats) = flow_stats {
            source = source.with_flow_log(stats);
        }
        let server = observe::Server::bind(
            addr,
            status.clone(),
            source,
            observe::HttpOptions::default(),
        )
        .await
        .with_context(|| format!("listening on {addr} (metrics-addr)"))?;
        tracing::info!(addr = %addr, "serving /metrics, /healthz and /readyz");
        tokio::spawn(async move {
            if let Err(e) = server.run().await {
                tracing::error!(error = %e, "the metrics server stopped");
            }
        });
    }

    let (source_task, updates) = match &cfg.source {
        SourceConfig::Directory(dir) => sources::directory::watch(dir.clone()),
        SourceConfig::Kubernetes { kubeconfig } => sources::kubernetes::watch(KubernetesOptions {
            node_name: cfg.node_name.clone(),
            kubeconfig: kubeconfig.clone(),
            ..KubernetesOptions::default()
        })
        .await
        .context("connecting to the Kubernetes API server")?,
    };

    let agent = Agent::new(
        dp,
        status,
        AgentOptions {
            selector: Selector {
                node_name: cfg.node_name.clone(),
                interface_prefix: cfg.interface_prefix.clone(),
            },
            compile: evaluator::Options {
                failsafe: cfg.failsafe.clone(),
            },
            fail_closed: cfg.fail_closed,
            state_dir: Some(cfg.state_dir.clone()),
            ..AgentOptions::default()
        },
    )?;
    let exit = agent.run(updates, shutdown_signal()).await;
    source_task.abort();
    let mut exit = exit?;
    if cfg.detach_on_exit {
        for ifindex in &exit.owned {
            if let Err(e) = exit.datapath.detach(*ifindex) {
                tracing::error!(ifindex, error = %e, "detaching");
            }
        }
        if let Err(e) = state::remove(&cfg.state_dir) {
            tracing::warn!(error = %e, "removing the state file");
        }
        tracing::info!(
            interfaces = exit.owned.len(),
            "detached (--detach-on-exit); nothing is enforced now"
        );
    } else {
        tracing::info!(
            interfaces = exit.owned.len(),
            "stopped; the programs stay attached and keep enforcing the last tables"
        );
    }
    Ok(())
}

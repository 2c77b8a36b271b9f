//! # civkit-plugin-process
//!
//! Policy plugins in any language. `[services.<name>] type =
//! "process-plugin"` runs an external command and asks it about every event
//! before the event is stored, in strfry's write-policy protocol:
//!
//! - civkit writes one JSON object per line on the plugin's stdin:
//!   `{"type": "new", "event": {...}, "receivedAt": <unix seconds>,
//!   "sourceType": "IP4", "sourceInfo": "203.0.113.7"}`;
//! - the plugin answers one JSON object per line on its stdout:
//!   `{"id": "<event id>", "action": "accept" | "reject" | "shadowReject",
//!   "msg": "..."}`.
//!
//! The node never waits on the plugin longer than `timeout_ms`: an event
//! it does not answer in time is refused with `error:`, and the plugin is
//! restarted. A plugin that exits is restarted with backoff; while it is
//! down, events are refused with `error:` at once. Events waiting for it are
//! bounded by `queue`; past it they are refused with `rate-limited:`.
//! Nothing here blocks another service or transport.
//!
//! `plugins/README.md` shows how to write one.

#![forbid(unsafe_code)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use civkit_framework::{
    Admission, BuildContext, Error, Origin, Prefix, Registry, Rejection, Result, Service,
    ServiceContext, Shutdown, Source,
};
use nostr::Event;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Config of `[services.<name>] type = "process-plugin"`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessConfig {
    /// The program and its arguments (run directly, not through a shell).
    pub command: Vec<String>,
    /// Longest wait for the plugin's answer to one event, in milliseconds.
    pub timeout_ms: u64,
    /// Events waiting for the plugin at most; more are refused `rate-limited:`.
    pub queue: usize,
    /// Kinds the plugin is asked about; empty means every kind.
    pub kinds: Vec<u16>,
    /// Ask about the operator's and the node's own services' events too.
    pub local: bool,
    /// Longest wait before restarting a plugin that keeps failing, in seconds.
    pub max_backoff_secs: u64,
    /// Longest answer line, in bytes; a longer one is a broken plugin.
    pub max_line_bytes: usize,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            command: Vec::new(),
            timeout_ms: 2_000,
            queue: 256,
            kinds: Vec::new(),
            local: false,
            max_backoff_secs: 30,
            max_line_bytes: 65_536,
        }
    }
}

const EXAMPLE: &str = r#"# The program and its arguments (run directly, not through a shell).
command = ["python3", "plugins/examples/whitelist.py", "whitelist.txt"]
# Longest wait for the plugin's answer to one event, in milliseconds; then `error:`.
timeout_ms = 2000
# Events waiting for the plugin at most; more are refused `rate-limited:`.
queue = 256
# Kinds the plugin is asked about; empty means every kind.
kinds = []
# Ask about the operator's and the node's own services' events too.
local = false
# Longest wait before restarting a plugin that keeps failing, in seconds.
max_backoff_secs = 30
# Longest answer line, in bytes; a longer one is a broken plugin.
max_line_bytes = 65536
"#;

/// Register the `process-plugin` service.
pub fn register(registry: &mut Registry) {
    registry.register_service(
        "process-plugin",
        "policy plugin in any language: an external process speaking strfry's write-policy protocol",
        EXAMPLE,
        |cfg: ProcessConfig, ctx: &BuildContext| {
            let key = format!("services.{}", ctx.instance);
            if cfg.command.is_empty() || cfg.command[0].is_empty() {
                return Err(Error::config(
                    format!("{key}.command"),
                    "names no program",
                ));
            }
            if cfg.timeout_ms == 0 || cfg.queue == 0 || cfg.max_line_bytes < 64 {
                return Err(Error::config(
                    key,
                    "timeout_ms and queue must be at least 1, max_line_bytes at least 64",
                ));
            }
            Ok(Arc::new(ProcessPlugin::new(&ctx.instance, cfg)) as Arc<dyn Service>)
        },
    );
}

/// What the plugin decided about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Accept,
    Reject(Rejection),
    Shadow,
}

/// One event waiting for the plugin.
struct Request {
    id: String,
    line: String,
    deadline: Instant,
    reply: oneshot::Sender<Verdict>,
}

/// The service: a queue in front of the supervised process.
pub struct ProcessPlugin {
    name: String,
    config: ProcessConfig,
    queue: mpsc::Sender<Request>,
    /// Taken by `run`, which supervises the process.
    waiting: Mutex<Option<mpsc::Receiver<Request>>>,
}

impl std::fmt::Debug for ProcessPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPlugin")
            .field("name", &self.name)
            .field("command", &self.config.command)
            .finish()
    }
}

impl ProcessPlugin {
    /// A plugin service named `name` (its instance), not started yet.
    pub fn new(name: &str, config: ProcessConfig) -> Self {
        let (queue, waiting) = mpsc::channel(config.queue.max(1));
        ProcessPlugin {
            name: name.to_string(),
            config,
            queue,
            waiting: Mutex::new(Some(waiting)),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms.max(1))
    }
}

/// strfry's `sourceType` and `sourceInfo` for an origin.
///
/// | origin | `sourceType` | `sourceInfo` |
/// |---|---|---|
/// | websocket client over IPv4 / IPv6 | `IP4` / `IP6` | its address |
/// | websocket client through the onion service | `Tor` | empty |
/// | websocket client of unknown address | `IP4` | empty |
/// | BOLT8 peer (a federated board) | `Stream` | its node id |
/// | onion-message sender | `Onion` | empty |
/// | operator (admin API), node service, in-process client | `Import` | `admin`, `service:<name>`, `memory` |
pub fn source(origin: &Origin) -> (&'static str, String) {
    match &origin.source {
        Source::Network { via_tor: true, .. } => ("Tor", String::new()),
        Source::Network {
            ip: Some(ip @ std::net::IpAddr::V6(_)),
            ..
        } => ("IP6", ip.to_string()),
        Source::Network { ip, .. } => ("IP4", ip.map(|i| i.to_string()).unwrap_or_default()),
        Source::LightningPeer { node_id } => ("Stream", node_id.clone()),
        Source::OnionSender { .. } => ("Onion", String::new()),
        Source::Admin => ("Import", "admin".into()),
        Source::Service(name) => ("Import", format!("service:{name}")),
        Source::Memory { .. } => ("Import", "memory".into()),
    }
}

/// The request line for `event` (without its newline).
fn request_line(origin: &Origin, event: &Event, received_at: u64) -> String {
    let (kind, info) = source(origin);
    format!(
        r#"{{"type":"new","event":{},"receivedAt":{received_at},"sourceType":{},"sourceInfo":{}}}"#,
        civkit_framework::canonical::event_json(event),
        serde_json::Value::from(kind),
        serde_json::Value::from(info),
    )
}

#[derive(Deserialize)]
struct Answer {
    id: String,
    action: String,
    #[serde(default)]
    msg: String,
}

/// A plugin's refusal as a NIP-01 rejection: its own prefix when it gave a
/// known one (`rate-limited: slow down`), else `blocked:`.
fn refusal(msg: &str) -> Rejection {
    let msg = msg.trim();
    let known = [
        Prefix::Blocked,
        Prefix::RateLimited,
        Prefix::Restricted,
        Prefix::Invalid,
        Prefix::Pow,
        Prefix::PaymentRequired,
        Prefix::AuthRequired,
        Prefix::Unsupported,
        Prefix::Error,
        Prefix::Duplicate,
    ];
    for prefix in known {
        if let Some(rest) = msg
            .strip_prefix(prefix.as_str())
            .and_then(|r| r.strip_prefix(':'))
        {
            return Rejection {
                prefix,
                reason: rest.trim().to_string(),
            };
        }
    }
    Rejection::blocked(if msg.is_empty() {
        "refused by the board's policy"
    } else {
        msg
    })
}

fn verdict(answer: &Answer) -> Option<Verdict> {
    match answer.action.as_str() {
        "accept" => Some(Verdict::Accept),
        "reject" => Some(Verdict::Reject(refusal(&answer.msg))),
        "shadowReject" => Some(Verdict::Shadow),
        _ => None,
    }
}

/// Why a running plugin stopped serving.
enum Ended {
    /// The node is stopping.
    Shutdown,
    /// Every sender is gone (the service was dropped).
    Closed,
    /// It exited, broke the protocol or did not answer in time.
    Failed(String),
}

/// One line of at most `max` bytes (without its newline); `None` at EOF.
async fn read_line(
    out: &mut BufReader<ChildStdout>,
    max: usize,
) -> std::result::Result<Option<String>, String> {
    let mut buf = Vec::new();
    let n = (&mut *out)
        .take(max as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|e| format!("reading its stdout: {e}"))?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        if buf.len() > max {
            return Err(format!("it wrote a line longer than {max} bytes"));
        }
        return Ok(None); // the last line of a plugin that exited
    }
    buf.pop();
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

impl ProcessPlugin {
    fn start(&self) -> std::io::Result<Child> {
        let mut cmd = Command::new(&self.config.command[0]);
        cmd.args(&self.config.command[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        if let Some(err) = child.stderr.take() {
            // What the plugin prints for its operator, line by line; a
            // longer line is logged in pieces, so none is held whole.
            let name = self.name.clone();
            tokio::spawn(async move {
                let mut err = BufReader::new(err);
                let mut piece = Vec::new();
                loop {
                    piece.clear();
                    match (&mut err).take(1_000).read_until(b'\n', &mut piece).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let text = String::from_utf8_lossy(&piece);
                            info!(plugin = %name, "{}", text.trim_end());
                        }
                    }
                }
            });
        }
        Ok(child)
    }

    /// Answer requests with the running `child` until it fails or the
    /// node stops. `answered` is set when it answered at least once.
    async fn serve(
        &self,
        child: &mut Child,
        waiting: &mut mpsc::Receiver<Request>,
        shutdown: &mut Shutdown,
        answered: &mut bool,
    ) -> Ended {
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Ended::Failed("its pipes could not be opened".into());
        };
        let mut stdout = BufReader::new(stdout);
        loop {
            let request = tokio::select! {
                r = waiting.recv() => match r {
                    Some(r) => r,
                    None => return Ended::Closed,
                },
                status = child.wait() => {
                    return Ended::Failed(match status {
                        Ok(s) => format!("it exited ({s})"),
                        Err(e) => format!("waiting for it failed: {e}"),
                    });
                }
                _ = shutdown.wait() => return Ended::Shutdown,
            };
            if Instant::now() >= request.deadline {
                // It waited its whole time in the queue.
                let _ = request.reply.send(Verdict::Reject(self.late()));
                continue;
            }
            let deadline = request.deadline;
            let asked = self.ask(&mut stdin, &mut stdout, &request);
            match tokio::time::timeout_at(deadline, asked).await {
                Ok(Ok(v)) => {
                    *answered = true;
                    let _ = request.reply.send(v);
                }
                Ok(Err(why)) => {
                    let _ = request.reply.send(Verdict::Reject(Rejection::error(
                        "the board's policy plugin failed; retry later",
                    )));
                    return Ended::Failed(why);
                }
                Err(_) => {
                    let _ = request.reply.send(Verdict::Reject(self.late()));
                    return Ended::Failed(format!(
                        "it did not answer within {} ms",
                        self.config.timeout_ms
                    ));
                }
            }
        }
    }

    fn late(&self) -> Rejection {
        Rejection::error(format!(
            "the board's policy plugin did not answer within {} ms",
            self.config.timeout_ms
        ))
    }

    /// Write one request and read lines until its answer.
    async fn ask(
        &self,
        stdin: &mut ChildStdin,
        stdout: &mut BufReader<ChildStdout>,
        request: &Request,
    ) -> std::result::Result<Verdict, String> {
        stdin
            .write_all(format!("{}\n", request.line).as_bytes())
            .await
            .map_err(|e| format!("writing to its stdin: {e}"))?;
        stdin
            .flush()
            .await
            .map_err(|e| format!("writing to its stdin: {e}"))?;
        loop {
            let Some(line) = read_line(stdout, self.config.max_line_bytes).await? else {
                return Err("it closed its stdout".into());
            };
            let shown: String = line.chars().take(200).collect();
            match serde_json::from_str::<Answer>(&line) {
                Ok(a) if a.id == request.id => {
                    return verdict(&a)
                        .ok_or_else(|| format!("it answered the action `{}`", a.action));
                }
                // An answer to an event it was asked about before (the
                // node gave up on it), or output that is not an answer.
                Ok(_) => {
                    debug!(plugin = %self.name, line = %shown, "answer to another event skipped")
                }
                Err(e) => {
                    warn!(plugin = %self.name, line = %shown, error = %e, "plugin output that is not an answer skipped")
                }
            }
        }
    }

    /// Refuse what arrives until `until` (the plugin is down).
    async fn refuse_until(
        &self,
        until: Instant,
        waiting: &mut mpsc::Receiver<Request>,
        shutdown: &mut Shutdown,
    ) -> bool {
        loop {
            tokio::select! {
                r = waiting.recv() => match r {
                    Some(r) => {
                        let _ = r.reply.send(Verdict::Reject(Rejection::error(
                            "the board's policy plugin is restarting; retry later",
                        )));
                    }
                    None => return false,
                },
                _ = tokio::time::sleep_until(until) => return true,
                _ = shutdown.wait() => return false,
            }
        }
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(250);

#[async_trait]
impl Service for ProcessPlugin {
    async fn admit_event(&self, ctx: &ServiceContext, origin: &Origin, event: &Event) -> Admission {
        let applies =
            self.config.kinds.is_empty() || self.config.kinds.contains(&event.kind.as_u16());
        if !applies || (origin.is_local() && !self.config.local) {
            return Admission::Accept;
        }
        let (reply, answer) = oneshot::channel();
        let request = Request {
            id: event.id.to_hex(),
            line: request_line(origin, event, ctx.now().as_secs()),
            deadline: Instant::now() + self.timeout(),
            reply,
        };
        if let Err(e) = self.queue.try_send(request) {
            return Admission::Reject(match e {
                mpsc::error::TrySendError::Full(_) => {
                    Rejection::rate_limited("the board's policy plugin is busy; retry later")
                }
                mpsc::error::TrySendError::Closed(_) => {
                    Rejection::error("the board's policy plugin has stopped")
                }
            });
        }
        // The supervisor answers every request by its deadline; the margin
        // only guards against a supervisor that is gone.
        let guard = self.timeout() + Duration::from_secs(1);
        match tokio::time::timeout(guard, answer).await {
            Ok(Ok(Verdict::Accept)) => Admission::Accept,
            Ok(Ok(Verdict::Reject(r))) => Admission::Reject(r),
            Ok(Ok(Verdict::Shadow)) => Admission::ShadowReject,
            Ok(Err(_)) | Err(_) => Admission::Reject(self.late()),
        }
    }

    async fn run(&self, _ctx: ServiceContext, mut shutdown: Shutdown) -> Result<()> {
        let Some(mut waiting) = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return Ok(());
        };
        let max_backoff = Duration::from_secs(self.config.max_backoff_secs.max(1));
        let mut backoff = FIRST_BACKOFF;
        loop {
            let why = match self.start() {
                Ok(mut child) => {
                    info!(plugin = %self.name, "policy plugin started");
                    let mut answered = false;
                    let ended = self
                        .serve(&mut child, &mut waiting, &mut shutdown, &mut answered)
                        .await;
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    if answered {
                        backoff = FIRST_BACKOFF;
                    }
                    match ended {
                        Ended::Shutdown | Ended::Closed => return Ok(()),
                        Ended::Failed(why) => why,
                    }
                }
                Err(e) => format!("it could not be started: {e}"),
            };
            warn!(plugin = %self.name, reason = %why, retry_in_ms = backoff.as_millis() as u64, "policy plugin stopped; restarting");
            if !self
                .refuse_until(Instant::now() + backoff, &mut waiting, &mut shutdown)
                .await
            {
                return Ok(());
            }
            backoff = (backoff * 2).min(max_backoff);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugins_prefix_is_kept_and_a_bare_message_is_blocked() {
        assert_eq!(
            refusal("rate-limited: slow down"),
            Rejection::rate_limited("slow down")
        );
        assert_eq!(
            refusal("not on the list"),
            Rejection::blocked("not on the list")
        );
        assert_eq!(
            refusal(""),
            Rejection::blocked("refused by the board's policy")
        );
        // A prefix must be followed by its colon.
        assert_eq!(refusal("pow"), Rejection::blocked("pow"));
    }

    #[test]
    fn sources_follow_strfry_names() {
        let net = |ip: &str, via_tor| {
            Origin::new(
                "relay",
                Source::Network {
                    ip: Some(ip.parse().unwrap()),
                    via_tor,
                },
            )
        };
        assert_eq!(
            source(&net("203.0.113.7", false)),
            ("IP4", "203.0.113.7".into())
        );
        assert_eq!(
            source(&net("2001:db8::1", false)),
            ("IP6", "2001:db8::1".into())
        );
        assert_eq!(source(&net("127.0.0.1", true)), ("Tor", String::new()));
        let peer = Origin::new(
            "ln",
            Source::LightningPeer {
                node_id: "02ab".into(),
            },
        );
        assert_eq!(source(&peer), ("Stream", "02ab".into()));
        let onion = Origin::new(
            "onion",
            Source::OnionSender {
                has_reply_path: true,
            },
        );
        assert_eq!(source(&onion).0, "Onion");
        let admin = civkit_framework::LocalOrigin::admin();
        assert_eq!(source(admin.origin()), ("Import", "admin".into()));
    }
}

//! Queryable state in the harness: the server `run --query-addr` starts (here, in
//! each process of several, or as the supervisor's gateway), and `query`, the
//! command-line client.

use flowstate_query::{QueryHub, QueryServer, ServerConfig};
use flowstate_query_client::{BatchRequest, Consistency, QueryClient};
use serde_json::Value;

use crate::AppError;
use crate::cli::RunOptions;

/// `--query-addr` as given, or `127.0.0.1:PORT` when it is only a port: the server
/// binds the loopback interface unless told otherwise.
fn query_addr(opts: &RunOptions) -> Option<String> {
    opts.query_addr.as_ref().map(|a| match a.parse::<u16>() {
        Ok(port) => format!("127.0.0.1:{port}"),
        Err(_) => a.clone(),
    })
}

/// The query address of every process of `processes`: `--query-peers`, or the ports
/// after `--query-addr`'s.
pub(crate) fn peers(opts: &RunOptions, processes: usize) -> Result<Vec<String>, AppError> {
    if !opts.query_peers.is_empty() {
        if opts.query_peers.len() != processes {
            return Err(AppError::Usage(format!(
                "--query-peers names {} addresses for {processes} processes",
                opts.query_peers.len()
            )));
        }
        return Ok(opts.query_peers.clone());
    }
    let Some(addr) = &query_addr(opts) else {
        return Ok(Vec::new());
    };
    let bad = || AppError::Usage(format!("--query-addr `{addr}` is not HOST:PORT"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    (0..processes)
        .map(|i| {
            u16::try_from(usize::from(port) + 1 + i)
                .map(|p| format!("{host}:{p}"))
                .map_err(|_| bad())
        })
        .collect()
}

/// The server of this process of the job (`process` of several, or the only one),
/// when `run` was asked for one, and the hub to give the job.
pub(crate) fn serve(
    opts: &RunOptions,
    process: Option<(usize, usize)>,
) -> Result<Option<(QueryHub, QueryServer)>, AppError> {
    let (addr, peers) = match process {
        None => match query_addr(opts) {
            Some(a) => (a, Vec::new()),
            None => return Ok(None),
        },
        Some((i, n)) => {
            let peers = peers(opts, n)?;
            match peers.get(i) {
                Some(a) => (a.clone(), peers.clone()),
                None => return Ok(None),
            }
        }
    };
    let hub = QueryHub::new();
    let config = ServerConfig::new(addr)
        .peers(peers)
        .with_routes(crate::web::job_routes(opts));
    let server = QueryServer::start(hub.clone(), config)
        .map_err(|e| AppError::Failed(format!("queryable state: {e}")))?;
    Ok(Some((hub, server)))
}

/// The supervisor's gateway, when `run --processes N --query-addr` asks for one.
pub(crate) fn gateway(opts: &RunOptions) -> Result<Option<QueryServer>, AppError> {
    let Some(addr) = query_addr(opts) else {
        return Ok(None);
    };
    let peers = peers(opts, opts.processes)?;
    QueryServer::gateway(ServerConfig::new(addr).peers(peers))
        .map(Some)
        .map_err(|e| AppError::Failed(format!("queryable state: {e}")))
}

/// A key from the command line: JSON, or else the text as a string.
fn lenient(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// `query ADDR [STATE [KEY...]]`: prints the answer as JSON.
pub(crate) fn run(
    addr: &str,
    state: Option<&str>,
    keys: &[String],
    consistency: &str,
    user_key: Option<&str>,
) -> Result<(), AppError> {
    let consistency: Consistency = consistency.parse().map_err(AppError::Usage)?;
    let client = QueryClient::new(addr).map_err(|e| AppError::Failed(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AppError::io("starting the client"))?;
    let user_key = user_key.map(lenient);
    let answer: Value = runtime.block_on(async {
        let to_json = |v: Result<Value, serde_json::Error>| v.unwrap_or(Value::Null);
        Ok::<_, flowstate_query_client::ClientError>(match (state, keys) {
            (None, _) => to_json(serde_json::to_value(client.states().await?)),
            (Some(s), []) => {
                return Err(flowstate_query_client::ClientError::Address {
                    addr: addr.to_string(),
                    why: format!("give a key of `{s}` to look up"),
                });
            }
            (Some(s), [key]) => match client
                .lookup(s, &lenient(key), consistency, user_key.as_ref())
                .await?
            {
                Some(v) => to_json(serde_json::to_value(v)),
                None => Value::Null,
            },
            (Some(s), keys) => {
                let request = BatchRequest {
                    keys: keys.iter().map(|k| lenient(k)).collect(),
                    consistency,
                    user_key,
                    namespace: None,
                };
                to_json(serde_json::to_value(client.batch_json(s, &request).await?))
            }
        })
    })?;
    if answer.is_null() {
        return Err(AppError::Failed(format!(
            "no value stored for {} in `{}`",
            keys.join(" "),
            state.unwrap_or_default()
        )));
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&answer).unwrap_or_else(|_| answer.to_string())
    );
    Ok(())
}

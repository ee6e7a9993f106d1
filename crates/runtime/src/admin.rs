//! The admin endpoint every proxy serves alike, as Istio's proxies do:
//! `/` (what it answers), `/config_dump` (what the binary's dump function
//! gives), `/logging` (the log filter, changed while running) and
//! `/quitquitquit` (drain and exit, as SIGTERM).

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::drain::DrainWatcher;
use crate::endpoint::{self, Body};
use crate::logging;

/// Serves the admin endpoint of `component` until the drain. `dump`
/// renders `/config_dump` (JSON); `holds` says in a few words what it
/// holds, for `/`.
pub async fn serve(
    component: &'static str,
    holds: &'static str,
    listener: TcpListener,
    watcher: DrainWatcher,
    dump: impl Fn() -> Vec<u8> + Send + Sync + 'static,
) {
    let index = format!(
        "{component} admin\n\
         GET  /config_dump     {holds}\n\
         POST /logging         ?level=<level|target=level,...> sets the log filter, ?reset restores it;\n\
         \x20                     without parameters it prints the filter in force\n\
         POST /quitquitquit    drains and exits, as SIGTERM does\n"
    );
    endpoint::serve("admin", listener, watcher, move |req| {
        if let Some(shared) = respond(req) {
            return shared;
        }
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/") => endpoint::text(StatusCode::OK, index.clone()),
            (&Method::GET, "/config_dump") => endpoint::json(dump()),
            (_, "/" | "/config_dump") => endpoint::status(StatusCode::METHOD_NOT_ALLOWED),
            _ => endpoint::status(StatusCode::NOT_FOUND),
        }
    })
    .await
}

/// Answers `/logging` and `/quitquitquit`; `None` for any other path.
fn respond(req: &Request<Incoming>) -> Option<Response<Body>> {
    match req.uri().path() {
        "/logging" => Some(logging(req)),
        "/quitquitquit" if req.method() == Method::POST => {
            tracing::info!("shutdown asked for on the admin endpoint");
            crate::signal::quit();
            Some(endpoint::text(StatusCode::OK, "OK\n"))
        }
        "/quitquitquit" => Some(endpoint::status(StatusCode::METHOD_NOT_ALLOWED)),
        _ => None,
    }
}

/// `/logging`: `POST ?level=debug` or `?level=access:debug,info` (istioctl's
/// `target:level` or `target=level`), `POST ?reset`; no parameter prints
/// the filter in force.
fn logging(req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::POST {
        return endpoint::status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let done = if endpoint::query_param(req, "reset").is_some() {
        logging::reset_filter()
    } else if let Some(level) = endpoint::query_param(req, "level") {
        logging::set_filter(&directives(&level))
    } else {
        Ok(())
    };
    match done.and_then(|()| logging::current_filter()) {
        Ok(filter) => endpoint::text(StatusCode::OK, format!("current log level is {filter}\n")),
        Err(e @ logging::FilterError::Invalid { .. }) => {
            endpoint::text(StatusCode::BAD_REQUEST, format!("{e}\n"))
        }
        Err(e) => endpoint::text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// istioctl's `access:debug` → `access=debug` (a target's own `::` kept).
fn directives(level: &str) -> String {
    level
        .split(',')
        .map(|d| match d.rsplit_once(':') {
            Some((target, lvl))
                if !d.contains('=') && !target.ends_with(':') && !target.is_empty() =>
            {
                format!("{target}={lvl}")
            }
            _ => d.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn istioctl_levels_become_filter_directives() {
        assert_eq!(super::directives("debug"), "debug");
        assert_eq!(super::directives("access:debug,info"), "access=debug,info");
        assert_eq!(
            super::directives("ztunnel::proxy:trace"),
            "ztunnel::proxy=trace"
        );
        assert_eq!(super::directives("a=warn"), "a=warn");
    }
}

//! Which endpoint a load test may hit. Load generation is only aimed at loopback unless the
//! operator named the target explicitly: a mistyped default must never flood someone's server.

use tokio_tungstenite::tungstenite::http::Uri;

/// Our server's Realtime endpoint on its default port.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:8080/v1/realtime";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TargetError {
    #[error("invalid URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("URL scheme must be ws or wss, not {0:?}")]
    Scheme(String),
    #[error(
        "refusing non-loopback host {0:?}: name the target explicitly with --url to load-test it"
    )]
    NotLoopback(String),
}

/// True for `localhost` and loopback IP literals (IPv6 may come bracketed, as in URLs).
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.eq_ignore_ascii_case("localhost") {
        return true;
    }
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Validates `url`; a non-loopback host passes only when `explicit` (the operator typed it).
pub fn check_target(url: &str, explicit: bool) -> Result<(), TargetError> {
    let uri: Uri = url.parse().map_err(|e| TargetError::BadUrl {
        url: url.into(),
        reason: format!("{e}"),
    })?;
    match uri.scheme_str() {
        Some("ws" | "wss") => {}
        other => return Err(TargetError::Scheme(other.unwrap_or("").into())),
    }
    let host = uri.host().ok_or_else(|| TargetError::BadUrl {
        url: url.into(),
        reason: "no host".into(),
    })?;
    if !explicit && !is_loopback_host(host) {
        return Err(TargetError::NotLoopback(host.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_pass_without_explicit_url() {
        for url in [
            DEFAULT_URL,
            "ws://localhost:9/v1/realtime",
            "ws://[::1]:80/x",
            "wss://127.0.0.2/x",
        ] {
            assert_eq!(check_target(url, false), Ok(()), "{url}");
        }
    }

    #[test]
    fn remote_hosts_need_an_explicit_url() {
        let url = "wss://api.openai.com/v1/realtime?model=gpt-realtime";
        assert_eq!(
            check_target(url, false),
            Err(TargetError::NotLoopback("api.openai.com".into()))
        );
        assert_eq!(check_target(url, true), Ok(()));
        assert!(matches!(
            check_target("ws://10.0.0.1/x", false),
            Err(TargetError::NotLoopback(_))
        ));
    }

    #[test]
    fn bad_urls_are_typed_errors() {
        assert!(matches!(
            check_target("http://127.0.0.1/x", true),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            check_target("not a url", true),
            Err(TargetError::BadUrl { .. })
        ));
    }
}

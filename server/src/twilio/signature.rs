//! `X-Twilio-Signature`: Twilio signs every request it makes, the Media Streams WebSocket
//! upgrade included, with the account's auth token: base64(HMAC-SHA1(token, URL + the POST
//! parameters sorted by name, each as name then value)). A stream's upgrade is a GET, so only
//! the URL is signed — the `<Stream url>` exactly as written in the TwiML. Sans-IO.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The header Twilio puts its signature in.
pub const HEADER: &str = "x-twilio-signature";

/// Twilio's signature of a request to `url` with form `params` (none for the WebSocket).
/// The server only verifies; the tests sign with this (and with Twilio's own Python SDK).
#[cfg(test)]
pub fn sign(auth_token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut mac = mac(auth_token);
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `signature` is Twilio's for a GET of `url`. Like Twilio's own validators, the URL is
/// also tried with its default port written out or left off (proxies differ on which they pass).
pub fn verify(auth_token: &str, url: &str, signature: &str) -> bool {
    let Ok(offered) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    url_variants(url).iter().any(|candidate| {
        let mut mac = mac(auth_token);
        mac.update(candidate.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&offered).is_ok()
    })
}

fn mac(auth_token: &str) -> Hmac<Sha1> {
    // HMAC takes keys of any length; this cannot fail.
    Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC accepts any key length")
}

/// `url`, plus the same URL with the scheme's default port added or removed.
fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return out;
    };
    let default_port = match scheme {
        "https" | "wss" => "443",
        "http" | "ws" => "80",
        _ => return out,
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    let port_suffix = format!(":{default_port}");
    let other = match authority.strip_suffix(&port_suffix) {
        Some(host) => format!("{scheme}://{host}{tail}"),
        // A different explicit port (or an IPv6 literal's colons) stays as it is.
        None if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']')) =>
        {
            return out;
        }
        None => format!("{scheme}://{authority}{port_suffix}{tail}"),
    };
    out.push(other);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "12345";

    #[test]
    fn matches_twilios_documented_example() {
        // Twilio's request-validation example (the same value its Python SDK computes).
        let params = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ];
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(sign(TOKEN, url, &params), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
    }

    #[test]
    fn signs_url_then_sorted_params() {
        // The order the parameters arrive in does not matter.
        let a = sign(
            TOKEN,
            "https://example.com/voice",
            &[("To", "+1"), ("From", "+2")],
        );
        let b = sign(
            TOKEN,
            "https://example.com/voice",
            &[("From", "+2"), ("To", "+1")],
        );
        assert_eq!(a, b);
        // Same bytes signed as the URL with the params appended.
        assert_eq!(a, sign(TOKEN, "https://example.com/voiceFrom+2To+1", &[]));
        assert_ne!(
            a,
            sign(
                "54321",
                "https://example.com/voice",
                &[("To", "+1"), ("From", "+2")]
            )
        );
    }

    #[test]
    fn verifies_only_the_right_url_and_token() {
        let url = "wss://voice.example.com/v1/twilio";
        let signature = sign(TOKEN, url, &[]);
        assert!(verify(TOKEN, url, &signature));
        assert!(verify(
            TOKEN,
            "wss://voice.example.com:443/v1/twilio",
            &signature
        ));
        assert!(!verify(
            TOKEN,
            "wss://voice.example.com/v1/twilio?x=1",
            &signature
        ));
        assert!(!verify("other", url, &signature));
        assert!(!verify(TOKEN, url, "not base64 !"));
        assert!(!verify(TOKEN, url, ""));
    }

    #[test]
    fn port_variants() {
        assert_eq!(
            url_variants("wss://h.example/v1/twilio"),
            ["wss://h.example/v1/twilio", "wss://h.example:443/v1/twilio"]
        );
        assert_eq!(
            url_variants("ws://h.example:80/p?q=1"),
            ["ws://h.example:80/p?q=1", "ws://h.example/p?q=1"]
        );
        assert_eq!(
            url_variants("wss://h.example:8443/p"),
            ["wss://h.example:8443/p"]
        );
        assert_eq!(url_variants("not a url"), ["not a url"]);
    }
}

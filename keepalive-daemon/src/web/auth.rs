//! Basic auth for the HTTP server (--web.config.file basic_auth_users).

use std::collections::BTreeMap;

use base64::Engine as _;

/// Whether a request's `Authorization` header value passes basic auth. With no users
/// configured everything passes. bcrypt is deliberately slow: call from a blocking task.
pub fn authorized(users: &BTreeMap<String, String>, authorization: Option<&str>) -> bool {
    if users.is_empty() {
        return true;
    }
    let Some(encoded) = authorization.and_then(|h| h.trim().strip_prefix("Basic ")) else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return false;
    };
    let Some((user, password)) = decoded.split_once(':') else {
        return false;
    };
    users
        .get(user)
        .is_some_and(|hash| bcrypt::verify(password, hash).unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    }

    #[test]
    fn basic_auth_checks_bcrypt_hashes() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let users = BTreeMap::from([("prometheus".to_owned(), hash)]);
        assert!(authorized(&users, Some(&header("prometheus", "s3cret"))));
        assert!(!authorized(&users, Some(&header("prometheus", "wrong"))));
        assert!(!authorized(&users, Some(&header("someone", "s3cret"))));
        assert!(!authorized(&users, None));
        assert!(!authorized(&users, Some("Basic !!!")));
        assert!(!authorized(&users, Some("Bearer abc")));
        assert!(authorized(&BTreeMap::new(), None));
    }
}

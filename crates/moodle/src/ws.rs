//! The Moodle web-service client (REST protocol, JSON replies).
//!
//! Moodle answers as captured in `shared/moodle/ws/`: a call is a form-encoded POST to
//! `{wwwroot}/webservice/rest/server.php` with `wstoken`, `wsfunction`,
//! `moodlewsrestformat=json` and the parameters flattened as PHP form arrays
//! (`users[0][username]=...`; a JSON body is silently ignored by Moodle, so it is never sent).
//! A failed call still answers HTTP 200, with an object holding an `exception` key; the only
//! other status seen is 403 with an empty body when web services or REST are switched off.
//! Partial failures come back as `warnings`.
//!
//! The token is read from a file and never logged or shown (`Token`'s `Debug` hides it).
//! Retries: a call marked [`Safety::Read`] is repeated after a transport failure; a
//! [`Safety::Write`] call only when the connection was never made, since Moodle may have acted
//! on a request whose reply was lost.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// A web-service token (32 hex characters on a stock Moodle). Never printed.
#[derive(Clone)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(hidden)")
    }
}

impl Token {
    /// Reads a token from a file (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Self, WsError> {
        let text = std::fs::read_to_string(path).map_err(|e| WsError::TokenFile {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Self::new(text.trim()).map_err(|detail| WsError::TokenFile {
            path: path.display().to_string(),
            detail,
        })
    }

    /// Checks a token's shape.
    pub fn new(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("the file is empty; put the web-service token (Site administration > Server > Web services > Manage tokens) in it".into());
        }
        if !text.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err("a token is letters and digits only (32 hex characters on a stock Moodle); the file holds something else".into());
        }
        Ok(Self(text.to_string()))
    }
}

/// Whether a call may be repeated after a transport failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Safety {
    /// Reads: always safe to repeat.
    Read,
    /// Changes: repeated only when the request never reached Moodle.
    Write,
}

/// A web-service failure.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The token file could not be used.
    #[error("token file {path}: {detail}")]
    TokenFile {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// Moodle could not be reached, or the reply was cut.
    #[error("cannot reach Moodle at {url}: {detail}")]
    Unreachable {
        /// The endpoint.
        url: String,
        /// The transport error.
        detail: String,
        /// Whether the request may have reached Moodle.
        maybe_applied: bool,
    },
    /// 403 with an empty body: web services or the REST protocol are off.
    #[error(
        "Moodle at {url} answered 403: web services or the REST protocol are switched off (Site administration > Server > Web services: enable web services and the REST protocol)"
    )]
    Disabled {
        /// The endpoint.
        url: String,
    },
    /// Another HTTP status.
    #[error("Moodle at {url} answered HTTP {status}: {body}")]
    Http {
        /// The endpoint.
        url: String,
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The reply was not JSON.
    #[error("{function}: the reply is not JSON ({detail}); is {url} a Moodle site?")]
    NotJson {
        /// The endpoint.
        url: String,
        /// The function called.
        function: String,
        /// Why.
        detail: String,
    },
    /// Moodle refused the call (an `exception` in the reply).
    #[error("{function}: Moodle refused the call: {message} ({errorcode}){}", debuginfo.as_deref().map(|d| format!(" [{d}]")).unwrap_or_default())]
    Moodle {
        /// The function called.
        function: String,
        /// PHP exception class.
        exception: String,
        /// Moodle's short code.
        errorcode: String,
        /// Moodle's message (generic unless the site runs with debugging).
        message: String,
        /// Only with developer debugging on.
        debuginfo: Option<String>,
    },
}

impl WsError {
    /// Moodle's `errorcode`, if Moodle refused the call.
    pub fn errorcode(&self) -> Option<&str> {
        match self {
            Self::Moodle { errorcode, .. } => Some(errorcode),
            _ => None,
        }
    }

    /// The generic "Invalid parameter value detected" refusal (one bad row rejects a call).
    pub fn is_invalid_parameter(&self) -> bool {
        self.errorcode() == Some("invalidparameter")
    }

    /// Moodle is in maintenance mode or upgrading: try again later, nothing was applied.
    pub fn is_maintenance(&self) -> bool {
        matches!(
            self.errorcode(),
            Some("sitemaintenance" | "upgraderunning" | "maintenancemodeisenabled")
        )
    }

    /// Worth trying again later (Moodle down, maintenance, overloaded).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Http { status, .. } => base::retry::http_status_is_retriable(*status),
            _ => self.is_maintenance(),
        }
    }
}

impl base::retry::Retriable for WsError {
    fn is_retriable(&self) -> bool {
        self.is_transient()
    }
}

/// A warning in a successful reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// What it is about (`course`, `user` ...).
    pub item: String,
    /// Its id.
    pub itemid: i64,
    /// Moodle's code.
    pub warningcode: String,
    /// Moodle's text.
    pub message: String,
}

/// The `warnings` of a reply (empty when there are none).
pub fn warnings(reply: &Value) -> Vec<Warning> {
    reply
        .get("warnings")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|w| Warning {
                    item: w["item"].as_str().unwrap_or_default().to_string(),
                    itemid: w["itemid"].as_i64().unwrap_or_default(),
                    warningcode: w["warningcode"].as_str().unwrap_or_default().to_string(),
                    message: w["message"].as_str().unwrap_or_default().to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A call's parameters as PHP form fields, in order.
#[derive(Debug, Clone, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// No parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// `name=value`.
    pub fn set(mut self, name: &str, value: impl ToString) -> Self {
        self.0.push((name.to_string(), value.to_string()));
        self
    }

    /// `list[index]=value`.
    pub fn item(mut self, list: &str, index: usize, value: impl ToString) -> Self {
        self.0.push((format!("{list}[{index}]"), value.to_string()));
        self
    }

    /// `list[index][key]=value`.
    pub fn field(&mut self, list: &str, index: usize, key: &str, value: impl ToString) {
        self.0
            .push((format!("{list}[{index}][{key}]"), value.to_string()));
    }

    /// The fields.
    pub fn fields(&self) -> &[(String, String)] {
        &self.0
    }
}

/// A client for one Moodle site.
#[derive(Debug)]
pub struct Ws {
    endpoint: String,
    token: Token,
    client: reqwest::blocking::Client,
    /// Attempts for a call that may be repeated (at least 1).
    pub attempts: u32,
}

/// The REST endpoint for a site address (`https://lms.example` or the full `server.php` URL).
pub fn endpoint(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.ends_with("/webservice/rest/server.php") {
        url.to_string()
    } else {
        format!("{url}/webservice/rest/server.php")
    }
}

impl Ws {
    /// A client for the site at `url` (its `wwwroot`), with a request timeout.
    pub fn new(url: &str, token: Token, timeout: Duration) -> Result<Self, WsError> {
        let endpoint = endpoint(url);
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(WsError::Unreachable {
                url: endpoint,
                detail: "the Moodle address must start with http:// or https://".into(),
                maybe_applied: false,
            });
        }
        let client =
            wire::net::moodle_client(&endpoint, timeout).map_err(|e| WsError::Unreachable {
                url: endpoint.clone(),
                detail: e.to_string(),
                maybe_applied: false,
            })?;
        Ok(Self {
            endpoint,
            token,
            client,
            attempts: 3,
        })
    }

    /// The endpoint called.
    pub fn url(&self) -> &str {
        &self.endpoint
    }

    /// Calls `function`; returns its JSON reply (which may be `null`).
    pub fn call(&self, function: &str, params: &Params, safety: Safety) -> Result<Value, WsError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.call_once(function, params) {
                Err(WsError::Unreachable {
                    maybe_applied,
                    url,
                    detail,
                }) if attempt < self.attempts.max(1)
                    && (safety == Safety::Read || !maybe_applied) =>
                {
                    tracing::warn!(function, url = %url, error = %detail, attempt, "Moodle call failed; trying again");
                    base::retry::pause(Duration::from_millis(200 * u64::from(attempt)));
                }
                other => return other,
            }
        }
    }

    fn call_once(&self, function: &str, params: &Params) -> Result<Value, WsError> {
        let mut form: Vec<(&str, &str)> = Vec::with_capacity(params.0.len() + 3);
        form.push(("wstoken", &self.token.0));
        form.push(("wsfunction", function));
        form.push(("moodlewsrestformat", "json"));
        form.extend(params.0.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let unreachable = |e: reqwest::Error| WsError::Unreachable {
            url: self.endpoint.clone(),
            detail: base::text::error_chain(&e),
            maybe_applied: !e.is_connect(),
        };
        let resp = self
            .client
            .post(&self.endpoint)
            .form(&form)
            .send()
            .map_err(unreachable)?;
        let status = resp.status().as_u16();
        let body = resp.bytes().map_err(unreachable)?;
        if status == 403 && body.is_empty() {
            return Err(WsError::Disabled {
                url: self.endpoint.clone(),
            });
        }
        if status != 200 {
            return Err(WsError::Http {
                url: self.endpoint.clone(),
                status,
                body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            });
        }
        let value: Value = serde_json::from_slice(&body).map_err(|e| WsError::NotJson {
            url: self.endpoint.clone(),
            function: function.to_string(),
            detail: e.to_string(),
        })?;
        if let Some(exception) = value.get("exception").and_then(Value::as_str) {
            return Err(WsError::Moodle {
                function: function.to_string(),
                exception: exception.to_string(),
                errorcode: value["errorcode"].as_str().unwrap_or_default().to_string(),
                message: value["message"].as_str().unwrap_or_default().to_string(),
                debuginfo: value
                    .get("debuginfo")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            });
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_never_shows_and_bad_token_files_say_what_to_do() {
        let t = Token::new("0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(format!("{t:?}"), "Token(hidden)");
        assert!(Token::new("").unwrap_err().contains("Manage tokens"));
        assert!(Token::new("abc def").is_err());
        let ws = Ws::new("http://127.0.0.1:9", t, Duration::from_secs(1)).unwrap();
        assert!(!format!("{ws:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn endpoints_and_php_arrays_are_spelled_as_moodle_reads_them() {
        assert_eq!(
            endpoint("http://ship.local/moodle/"),
            "http://ship.local/moodle/webservice/rest/server.php"
        );
        assert_eq!(
            endpoint("http://x/webservice/rest/server.php"),
            "http://x/webservice/rest/server.php"
        );
        let mut p = Params::new()
            .set("field", "username")
            .item("values", 0, "j.hansen");
        p.field("users", 1, "email", "a@b");
        let names: Vec<&str> = p.fields().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["field", "values[0]", "users[1][email]"]);
    }

    #[test]
    fn warnings_are_read_from_a_successful_reply() {
        let v: Value = serde_json::json!({"warnings":[{"item":"course","itemid":999,"warningcode":"unknowncourseidnumber","message":"Unknown course ID 999"}]});
        let w = warnings(&v);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].warningcode, "unknowncourseidnumber");
        assert!(warnings(&Value::Null).is_empty());
    }
}

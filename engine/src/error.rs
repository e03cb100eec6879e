//! The one error type of operations a front end asks for (run, rerun, trigger, cancel,
//! show, query, backfill, ...), whichever front end asks: the CLI, the HTTP API or the
//! web UI.
//!
//! What callers do with a failure — the exit status, the HTTP status, whether to wait and
//! ask again — is decided from its [`Kind`], in one place each ([`Error::exit_code`],
//! [`Error::http_status`]), never from the message's wording.

/// What kind of failure, as callers act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad input: arguments, a workflow file, a request body. Exit 2, HTTP 400.
    Invalid,
    /// What was named does not exist (a run, a backfill, a workflow). Exit 2, HTTP 404.
    NotFound,
    /// Not allowed here (a policy, not a bad request). Exit 2, HTTP 403.
    Refused,
    /// Something is in progress that must end first (a run of the workflow); asking
    /// again later may succeed. Exit 2, HTTP 409.
    Busy,
    /// The request contradicts the state (e.g. another process owns the state dir).
    /// Exit 2, HTTP 409.
    Conflict,
    /// This process cannot do it (e.g. start runs for others without a daemon).
    /// Exit 2, HTTP 501.
    Unsupported,
    /// The service is stopping or cannot be reached now. Exit 1, HTTP 503.
    Unavailable,
    /// It went wrong (a failed run, an I/O error). Exit 1, HTTP 500.
    Failed,
    /// A bug: an invariant did not hold. Exit 1, HTTP 500; the message asks for a report.
    Internal,
}

/// A failed operation: its kind, what happened, and where and what to do when known.
///
/// `message` is what a person reads, whole. Messages written for the command line start
/// with `error: ` (or are a validation report of several `error:` lines); [`Error::summary`]
/// is the message without that prefix, for JSON answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
    /// What to do about it, when the message does not already say.
    pub hint: Option<String>,
    /// Where: `file:line:col`, a task id, a column.
    pub location: Option<String>,
}

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            hint: None,
            location: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(Kind::Invalid, message)
    }

    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(Kind::NotFound, message)
    }

    pub fn refused(message: impl Into<String>) -> Error {
        Error::new(Kind::Refused, message)
    }

    pub fn busy(message: impl Into<String>) -> Error {
        Error::new(Kind::Busy, message)
    }

    pub fn conflict(message: impl Into<String>) -> Error {
        Error::new(Kind::Conflict, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Error {
        Error::new(Kind::Unsupported, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Error {
        Error::new(Kind::Unavailable, message)
    }

    pub fn failed(message: impl Into<String>) -> Error {
        Error::new(Kind::Failed, message)
    }

    /// A bug: says so, and asks for a report.
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(Kind::Internal, message).with_hint(
            "this is a bug in orchestrator; please report it with the command and this message",
        )
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    pub fn at(mut self, location: impl Into<String>) -> Error {
        self.location = Some(location.into());
        self
    }

    /// The process's exit status for this failure: 1 when something went wrong, 2 when
    /// the request could not be done as asked.
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            Kind::Failed | Kind::Internal | Kind::Unavailable => 1,
            Kind::Invalid
            | Kind::NotFound
            | Kind::Refused
            | Kind::Busy
            | Kind::Conflict
            | Kind::Unsupported => 2,
        }
    }

    /// The HTTP status of this failure.
    pub fn http_status(&self) -> u16 {
        match self.kind {
            Kind::Invalid => 400,
            Kind::Refused => 403,
            Kind::NotFound => 404,
            Kind::Busy | Kind::Conflict => 409,
            Kind::Failed | Kind::Internal => 500,
            Kind::Unsupported => 501,
            Kind::Unavailable => 503,
        }
    }

    /// The kind an HTTP status stands for (a client reading another process's answer).
    pub fn kind_of_status(status: u16) -> Kind {
        match status {
            400 | 422 => Kind::Invalid,
            403 => Kind::Refused,
            404 => Kind::NotFound,
            409 => Kind::Busy,
            501 => Kind::Unsupported,
            503 => Kind::Unavailable,
            401..=499 => Kind::Invalid,
            _ => Kind::Failed,
        }
    }

    /// The message without a leading `error: `, with its location and hint: what a JSON
    /// answer carries.
    pub fn summary(&self) -> String {
        let msg = self
            .message
            .strip_prefix("error: ")
            .unwrap_or(&self.message);
        let mut s = match &self.location {
            Some(at) if !msg.contains(at.as_str()) => format!("{at}: {msg}"),
            _ => msg.to_string(),
        };
        if let Some(hint) = &self.hint {
            s.push_str("; ");
            s.push_str(hint);
        }
        s
    }
}

/// As the command line prints it: the message (with `error: ` where it was written for
/// the command line), the location and the hint.
impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Some(at) if !self.message.contains(at.as_str()) => {
                let msg = self
                    .message
                    .strip_prefix("error: ")
                    .unwrap_or(&self.message);
                write!(f, "error: {at}: {msg}")?
            }
            _ => f.write_str(&self.message)?,
        }
        if let Some(hint) = &self.hint {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// A state store's failure: a store held by another process is a conflict; one too new
/// or not a directory is the caller's to fix; the rest went wrong.
impl From<orchestrator_state::StateError> for Error {
    fn from(e: orchestrator_state::StateError) -> Error {
        use orchestrator_state::StateError;
        let message = format!("error: {e}");
        match e {
            StateError::Locked { .. } => Error::conflict(message),
            StateError::TooNew { .. } | StateError::NotADirectory { .. } => Error::invalid(message),
            _ => Error::failed(message),
        }
    }
}

/// A workflow that does not load: its diagnostics (file:line:col, what to do) as they are.
impl From<crate::workflow::LoadError> for Error {
    fn from(e: crate::workflow::LoadError) -> Error {
        match e {
            crate::workflow::LoadError::Invalid(d) => Error::invalid(d.to_string()),
            crate::workflow::LoadError::Read { .. } => Error::invalid(format!("error: {e}")),
        }
    }
}

impl From<crate::runner::RunError> for Error {
    fn from(e: crate::runner::RunError) -> Error {
        match e {
            crate::runner::RunError::State(s) => s.into(),
            crate::runner::RunError::Refused(m) => Error::invalid(format!("error: {m}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_exit_codes_come_from_the_kind_alone() {
        for (kind, http, exit) in [
            (Kind::Invalid, 400, 2),
            (Kind::NotFound, 404, 2),
            (Kind::Refused, 403, 2),
            (Kind::Busy, 409, 2),
            (Kind::Conflict, 409, 2),
            (Kind::Unsupported, 501, 2),
            (Kind::Unavailable, 503, 1),
            (Kind::Failed, 500, 1),
            (Kind::Internal, 500, 1),
        ] {
            for message in ["no run `x`", "in progress", "anything at all"] {
                let e = Error::new(kind, message);
                assert_eq!((e.http_status(), e.exit_code()), (http, exit), "{kind:?}");
            }
        }
    }

    #[test]
    fn summaries_drop_the_cli_prefix_and_keep_where_and_what_to_do() {
        let e = Error::invalid("error: no such column `x`")
            .at("wf.yaml:3:5")
            .with_hint("check the spelling");
        assert_eq!(
            e.summary(),
            "wf.yaml:3:5: no such column `x`; check the spelling"
        );
        assert_eq!(
            e.to_string(),
            "error: wf.yaml:3:5: no such column `x`; check the spelling"
        );
        assert!(Error::internal("oops").to_string().contains("a bug"));
    }
}

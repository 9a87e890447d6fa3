//! An AWS failure reduced to what callers decide on: the operation, the
//! service's error code and message, and whether trying again can help.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{op}: {message}{}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
pub struct AwsError {
    /// `service:Operation`, e.g. `ec2:CreateVpc`.
    pub op: &'static str,
    pub code: Option<String>,
    pub message: String,
    pub retryable: bool,
    pub status: Option<u16>,
}

const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "RequestThrottled",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "SlowDown",
    "ProvisionedThroughputExceededException",
    "EC2ThrottledException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "InternalServerException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "Unavailable",
];

/// Whether an AWS error code names a temporary condition (throttling, 5xx).
pub fn is_retryable_code(code: &str) -> bool {
    RETRYABLE_CODES.contains(&code)
}

impl AwsError {
    pub fn from_sdk<E>(op: &'static str, err: SdkError<E, Response>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_string);
        let message = match err.message() {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => match &err {
                SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
                    format!("could not reach the service: {}", DisplayErrorContext(&err))
                }
                // The service said no more than its code and status.
                SdkError::ServiceError(_) if code.is_some() || status.is_some() => format!(
                    "the service refused the request{}",
                    status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
                ),
                _ => DisplayErrorContext(&err).to_string(),
            },
        };
        let retryable = match &err {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => true,
            _ => {
                code.as_deref().is_some_and(is_retryable_code)
                    || status.is_some_and(|s| s >= 500 || s == 429)
            }
        };
        AwsError {
            op,
            code,
            message,
            retryable,
            status,
        }
    }

    pub fn code_is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

impl From<AwsError> for crate::failure::Failure {
    fn from(e: AwsError) -> Self {
        crate::failure::Failure {
            kind: crate::failure::Kind::Aws,
            op: e.op.to_string(),
            code: e.code,
            message: e.message,
            retryable: e.retryable,
            details: None,
        }
    }
}

impl From<AwsError> for crate::failure::Error {
    fn from(e: AwsError) -> Self {
        crate::failure::Error::Fail(e.into())
    }
}

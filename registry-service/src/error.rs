//! The registry's errors and the one place they become gRPC statuses.

use common::error::ErrorCode;
use tonic::Status;

use crate::catalog::CatalogError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("service does not exist")]
    ServiceNotFound,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("storage failed: {0}")]
    Storage(#[from] sea_orm::DbErr),
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<RegistryError> for Status {
    fn from(error: RegistryError) -> Status {
        match &error {
            RegistryError::ServiceNotFound => ErrorCode::NotFound.status("Service does not exist"),
            RegistryError::InvalidArgument(message) => ErrorCode::InvalidArgument.status(message.clone()),
            RegistryError::Catalog(_) => {
                tracing::error!(error = %error, "services directory unreadable");
                ErrorCode::Conflict.status(error.to_string())
            }
            RegistryError::Storage(db) => common::db::outage_status(db).unwrap_or_else(|| {
                tracing::error!(error = %error, "request failed");
                ErrorCode::Internal.status("internal error")
            }),
            RegistryError::Task(_) => {
                tracing::error!(error = %error, "request failed");
                ErrorCode::Internal.status("internal error")
            }
        }
    }
}

//! The certificate authority: root management, signing, and deciding which
//! identity a caller may have a certificate for.

pub mod authority;
pub mod kubernetes;
pub mod nodes;
pub mod service;
pub mod token;

pub use authority::{CaError, CertificateAuthority};
pub use nodes::{NodePods, PodIndex};
pub use service::CaService;
pub use token::{Authenticator, Caller, TokenIssuer};

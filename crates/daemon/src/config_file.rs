//! The daemon's config file (`switchboard up --config FILE`): the services
//! to supervise (`[services.*]`, `[logs]`, see [`crate::supervisor::config`])
//! and who may do what (`[security]`, `[roles.*]`, `[[policy]]`, see
//! [`crate::policy`]). Each part is read from the same text by its owner, so
//! errors keep their line numbers; an unknown section is refused by both.

use std::path::{Path, PathBuf};

use crate::policy::{Policy, RawPolicy, Security};
use crate::supervisor::{ConfigError, SupervisorConfig};

/// A whole, validated config file.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    pub services: SupervisorConfig,
    pub policy: Policy,
    pub security: Security,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text).map_err(|err| match err {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax { path: path.to_owned(), message },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let services = SupervisorConfig::parse(text)?;
        let syntax = |message: String| ConfigError::Syntax { path: PathBuf::new(), message };
        let raw: RawPolicy = toml::from_str(text).map_err(|err| syntax(err.to_string()))?;
        let (policy, security) = raw.validate().map_err(syntax)?;
        Ok(Self { services, policy, security })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Op, Principal};

    #[test]
    fn one_file_holds_services_and_policy() {
        let file = ConfigFile::parse(
            "[services.a]\ncommand = \"true\"\n[security]\nsocket_mode = \"0660\"\n\
             [[policy]]\nprincipal = \"user:nobody\"\nallow = [\"call a.*\"]\n",
        )
        .unwrap();
        assert_eq!(file.services.services.len(), 1);
        assert_eq!(file.security.socket_mode, 0o660);
        assert_eq!(file.policy.len(), 1);
        let root = file.policy.rules_for(&Principal::local(0, 0, 12345));
        assert!(!root.permits(Op::Call, "a.b"));
    }

    #[test]
    fn an_unknown_section_is_refused() {
        let err = ConfigFile::parse("[colours]\nred = 1\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `colours`"), "{err}");
    }
}

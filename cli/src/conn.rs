//! How a client command reaches the engine: a token and an address, from flags, the
//! environment or a profile.
//!
//! The first of these that gives a token wins, and the engine address and TLS settings
//! come with it (a profile is taken whole; `--host-port` still overrides its address):
//! 1. `--token`;
//! 2. `--profile <name>`;
//! 3. `$ADZE_TOKEN`, then `$HATCHET_CLIENT_TOKEN` (with `$ADZE_HOST_PORT` or
//!    `$HATCHET_CLIENT_HOST_PORT`, and the `$HATCHET_CLIENT_TLS_*` variables);
//! 4. `$ADZE_PROFILE`;
//! 5. the current profile (`adze profile use`).

use std::fmt;

use adze_sdk::{Client, ClientConfig, TokenClaims};

use crate::profile::{self, Store, TlsSettings};

#[derive(clap::Args, Clone, Default)]
pub struct Conn {
    /// API token (else `$ADZE_TOKEN` or `$HATCHET_CLIENT_TOKEN`, else a profile).
    #[arg(long, conflicts_with = "profile")]
    token: Option<String>,
    /// gRPC host:port (else `$ADZE_HOST_PORT` or `$HATCHET_CLIENT_HOST_PORT` with an
    /// environment token, else the profile's server, else the token's
    /// grpc_broadcast_address).
    #[arg(long)]
    host_port: Option<String>,
    /// Profile to use (else `$ADZE_PROFILE`, else the current one: `adze profile use`).
    #[arg(long)]
    profile: Option<String>,
}

/// Where the token came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    TokenFlag,
    TokenEnv(&'static str),
    /// A profile, chosen by `how` (`--profile`, `$ADZE_PROFILE` or `current`).
    Profile {
        name: String,
        how: &'static str,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::TokenFlag => write!(f, "--token"),
            Origin::TokenEnv(var) => write!(f, "${var}"),
            Origin::Profile { name, how } => write!(f, "profile {name:?} ({how})"),
        }
    }
}

/// The engine a command talks to and how.
#[derive(Clone)]
pub struct Target {
    pub token: String,
    /// gRPC `host:port`; `None`: the token's `grpc_broadcast_address`.
    pub host_port: Option<String>,
    pub tls: TlsSettings,
    pub origin: Origin,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("token", &profile::mask(&self.token))
            .field("host_port", &self.host_port)
            .field("tls", &self.tls)
            .field("origin", &self.origin)
            .finish()
    }
}

impl Conn {
    /// A client for the engine the flags, environment or profile name.
    pub fn client(&self) -> anyhow::Result<Client> {
        self.target()?.client(None)
    }

    /// The engine to talk to, read from the flags, the process environment and the
    /// profiles file.
    pub fn target(&self) -> anyhow::Result<Target> {
        let env = |key: &str| std::env::var(key).ok();
        self.resolve(env, || Ok(Store::locate(env)?.load()?))
    }

    /// [`Conn::target`] with the environment read through `env` and the profiles read
    /// by `profiles` (only when a profile is needed: a token from a flag or the
    /// environment works without a profiles file).
    pub fn resolve(
        &self,
        env: impl Fn(&str) -> Option<String>,
        profiles: impl FnOnce() -> anyhow::Result<profile::Profiles>,
    ) -> anyhow::Result<Target> {
        let env = |key: &str| {
            env(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let env_address = || {
            self.host_port
                .clone()
                .or_else(|| env("ADZE_HOST_PORT"))
                .or_else(|| env("HATCHET_CLIENT_HOST_PORT"))
        };
        let from_env = |token: String, origin: Origin| -> anyhow::Result<Target> {
            Ok(Target {
                token,
                host_port: env_address(),
                tls: TlsSettings::from_env(env)?,
                origin,
            })
        };
        if let Some(token) = &self.token {
            return from_env(token.trim().to_owned(), Origin::TokenFlag);
        }
        if let Some(name) = &self.profile {
            return self.profile_target(&profiles()?, name, "--profile");
        }
        for var in ["ADZE_TOKEN", "HATCHET_CLIENT_TOKEN"] {
            if let Some(token) = env(var) {
                return from_env(token, Origin::TokenEnv(var));
            }
        }
        if let Some(name) = env("ADZE_PROFILE") {
            return self.profile_target(&profiles()?, &name, "$ADZE_PROFILE");
        }
        let profiles = profiles()?;
        match &profiles.current {
            Some(name) => self.profile_target(&profiles, name, "current"),
            None if profiles.profiles.is_empty() => anyhow::bail!(
                "no API token: pass --token, set ADZE_TOKEN, or save a token with \
                 `adze profile add --name <name> --token <token>`"
            ),
            None => {
                let names: Vec<&str> = profiles.profiles.keys().map(String::as_str).collect();
                anyhow::bail!(
                    "no API token: pass --token or --profile ({}), set ADZE_TOKEN, or choose \
                     the current profile with `adze profile use <name>`",
                    names.join(", ")
                )
            }
        }
    }

    fn profile_target(
        &self,
        profiles: &profile::Profiles,
        name: &str,
        how: &'static str,
    ) -> anyhow::Result<Target> {
        let p = profiles.get(name)?;
        Ok(Target {
            token: p.token.clone(),
            host_port: self.host_port.clone().or_else(|| p.server.clone()),
            tls: p.tls(),
            origin: Origin::Profile {
                name: name.to_owned(),
                how,
            },
        })
    }
}

impl Target {
    /// The gRPC `host:port` connected to.
    pub fn address(&self) -> anyhow::Result<String> {
        if let Some(a) = &self.host_port {
            return Ok(a.clone());
        }
        let claims = TokenClaims::decode(&self.token)
            .map_err(|e| anyhow::anyhow!("the token of {}: {e}", self.origin))?;
        claims.grpc_broadcast_address.ok_or_else(|| {
            anyhow::anyhow!(
                "the token of {} names no engine address: pass --host-port",
                self.origin
            )
        })
    }

    /// A client of this engine, its workflow names prefixed with `namespace`.
    pub fn client(&self, namespace: Option<&str>) -> anyhow::Result<Client> {
        let config = ClientConfig {
            token: self.token.clone(),
            host_port: self.host_port.clone(),
            tls_strategy: self.tls.strategy.strategy(),
            tls_root_ca_file: self.tls.root_ca_file.clone(),
            tls_cert_file: self.tls.cert_file.clone(),
            tls_key_file: self.tls.key_file.clone(),
            tls_server_name: self.tls.server_name.clone(),
            namespace: namespace.map(str::to_owned),
            ..Default::default()
        };
        Client::new(config).map_err(|e| anyhow::anyhow!("{} cannot connect: {e}", self.origin))
    }

    /// The `HATCHET_CLIENT_*` variables that point an official SDK at this engine.
    pub fn sdk_env(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut env = vec![
            ("HATCHET_CLIENT_TOKEN".to_owned(), self.token.clone()),
            ("HATCHET_CLIENT_HOST_PORT".to_owned(), self.address()?),
        ];
        env.extend(self.tls.env());
        Ok(env)
    }
}

#[cfg(test)]
mod tests;

//! Profiles: named API tokens (and where their engine is) saved on the user's machine in
//! `$XDG_CONFIG_HOME/adze/profiles.toml`, so client commands need no `--token`. The engine
//! never sees them; a profile is a local bookmark of a token.
//!
//! The file holds secrets: it is written atomically with mode 0600 and refused, for
//! reading and writing alike, once group or others may read it.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use adze_sdk::{TlsStrategy, TokenClaims};
use serde::{Deserialize, Serialize};

mod cmd;

pub use cmd::{ProfileCmd, run};

/// Why the profiles file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot find the profiles file: neither $XDG_CONFIG_HOME nor $HOME is set")]
    NoConfigDir,
    #[error(
        "{path} can be read by other users (mode {mode:04o}) and it holds API tokens; \
         run `chmod 600 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid profiles file: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("no profile named {name:?} ({known})")]
    Unknown { name: String, known: Known },
    #[error("profile {0:?} exists: pass --force to replace it")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
}

/// The profile names there are, for an error message.
#[derive(Debug)]
pub struct Known(Vec<String>);

impl fmt::Display for Known {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            write!(f, "there are none: add one with `adze profile add`")
        } else {
            write!(f, "there are: {}", self.0.join(", "))
        }
    }
}

/// The transport security a profile's engine wants (`HATCHET_CLIENT_TLS_STRATEGY`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    /// Plaintext HTTP/2, for a local engine.
    #[default]
    None,
    /// TLS with the system's (or the profile's CA file's) roots.
    Tls,
    /// Mutual TLS.
    Mtls,
}

impl Tls {
    /// The value of `HATCHET_CLIENT_TLS_STRATEGY`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tls::None => "none",
            Tls::Tls => "tls",
            Tls::Mtls => "mtls",
        }
    }

    /// Parses a `HATCHET_CLIENT_TLS_STRATEGY` value.
    pub fn parse(value: &str) -> Option<Tls> {
        match value.trim().to_ascii_lowercase().as_str() {
            "none" => Some(Tls::None),
            "tls" => Some(Tls::Tls),
            "mtls" => Some(Tls::Mtls),
            _ => None,
        }
    }

    pub fn strategy(self) -> TlsStrategy {
        match self {
            Tls::None => TlsStrategy::None,
            Tls::Tls => TlsStrategy::Tls,
            Tls::Mtls => TlsStrategy::Mtls,
        }
    }
}

/// How to secure the connection: the strategy and its files, as the
/// `HATCHET_CLIENT_TLS_*` variables give them to the SDKs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub strategy: Tls,
    /// PEM CA certificates to check the engine's certificate against.
    pub root_ca_file: Option<PathBuf>,
    /// PEM certificate chain presented under `mtls`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// The name the engine's certificate must carry (default: the address's host).
    pub server_name: Option<String>,
}

impl TlsSettings {
    /// Reads `HATCHET_CLIENT_TLS_STRATEGY` (default `none` here, for a local engine)
    /// and the files' variables through `env`.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let strategy = match env("HATCHET_CLIENT_TLS_STRATEGY") {
            None => Tls::None,
            Some(v) => Tls::parse(&v).ok_or_else(|| {
                Error::Invalid(format!(
                    "HATCHET_CLIENT_TLS_STRATEGY must be none, tls or mtls, got {v:?}"
                ))
            })?,
        };
        Ok(TlsSettings {
            strategy,
            root_ca_file: env("HATCHET_CLIENT_TLS_ROOT_CA_FILE").map(PathBuf::from),
            cert_file: env("HATCHET_CLIENT_TLS_CERT_FILE").map(PathBuf::from),
            key_file: env("HATCHET_CLIENT_TLS_KEY_FILE").map(PathBuf::from),
            server_name: env("HATCHET_CLIENT_TLS_SERVER_NAME"),
        })
    }

    /// The `HATCHET_CLIENT_TLS_*` variables for an SDK.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![(
            "HATCHET_CLIENT_TLS_STRATEGY".to_owned(),
            self.strategy.as_str().to_owned(),
        )];
        let files = [
            ("HATCHET_CLIENT_TLS_ROOT_CA_FILE", &self.root_ca_file),
            ("HATCHET_CLIENT_TLS_CERT_FILE", &self.cert_file),
            ("HATCHET_CLIENT_TLS_KEY_FILE", &self.key_file),
        ];
        for (var, file) in files {
            if let Some(f) = file {
                env.push((var.to_owned(), f.display().to_string()));
            }
        }
        if let Some(name) = &self.server_name {
            env.push(("HATCHET_CLIENT_TLS_SERVER_NAME".to_owned(), name.clone()));
        }
        env
    }
}

/// One saved token and where its engine is.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub token: String,
    /// gRPC `host:port`; absent: the token's `grpc_broadcast_address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Absent: `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_strategy: Option<Tls>,
    /// `HATCHET_CLIENT_TLS_ROOT_CA_FILE`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_root_ca_file: Option<PathBuf>,
    /// `HATCHET_CLIENT_TLS_CERT_FILE`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// `HATCHET_CLIENT_TLS_KEY_FILE`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// `HATCHET_CLIENT_TLS_SERVER_NAME`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
}

impl Profile {
    /// A profile of `token` alone: its engine is the token's address, without TLS.
    pub fn of_token(token: impl Into<String>) -> Profile {
        Profile {
            token: token.into(),
            server: None,
            tls_strategy: None,
            tls_root_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_server_name: None,
        }
    }

    pub fn tls(&self) -> TlsSettings {
        TlsSettings {
            strategy: self.tls_strategy.unwrap_or_default(),
            root_ca_file: self.tls_root_ca_file.clone(),
            cert_file: self.tls_cert_file.clone(),
            key_file: self.tls_key_file.clone(),
            server_name: self.tls_server_name.clone(),
        }
    }
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("token", &mask(&self.token))
            .field("server", &self.server)
            .field("tls", &self.tls())
            .finish()
    }
}

/// The contents of `profiles.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profiles {
    /// The profile used when a command names none (`adze profile use`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

impl Profiles {
    pub fn get(&self, name: &str) -> Result<&Profile, Error> {
        self.profiles.get(name).ok_or_else(|| self.unknown(name))
    }

    fn unknown(&self, name: &str) -> Error {
        Error::Unknown {
            name: name.to_owned(),
            known: Known(self.profiles.keys().cloned().collect()),
        }
    }
}

/// Where the profiles file is.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// `$XDG_CONFIG_HOME/adze/profiles.toml`, else `$HOME/.config/adze/profiles.toml`,
    /// reading variables through `env`.
    pub fn locate(env: impl Fn(&str) -> Option<String>) -> Result<Store, Error> {
        let set = |key: &str| env(key).filter(|v| !v.is_empty());
        let config = match (set("XDG_CONFIG_HOME"), set("HOME")) {
            (Some(xdg), _) => PathBuf::from(xdg),
            (None, Some(home)) => Path::new(&home).join(".config"),
            (None, None) => return Err(Error::NoConfigDir),
        };
        Ok(Store::at(config.join("adze").join("profiles.toml")))
    }

    pub fn at(path: PathBuf) -> Store {
        Store { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved profiles; none when the file does not exist yet.
    pub fn load(&self) -> Result<Profiles, Error> {
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Profiles::default()),
            Err(e) => return Err(io(e)),
        };
        self.check_private(&file.metadata().map_err(io)?)?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).map_err(io)?;
        toml::from_str(&text).map_err(|source| Error::Parse {
            path: self.path.clone(),
            source,
        })
    }

    /// Replaces the file with `profiles`: written to a new file created with mode 0600
    /// beside it, synced, then renamed over it, so a reader sees the old file or the new
    /// one and the tokens are never readable by others, not even for a moment.
    pub fn save(&self, profiles: &Profiles) -> Result<(), Error> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { path, source }
        };
        match std::fs::metadata(&self.path) {
            Ok(meta) => self.check_private(&meta)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&self.path)(e)),
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        let text = toml::to_string_pretty(profiles)
            .map_err(|e| Error::Invalid(format!("cannot write the profiles: {e}")))?;
        let temp = dir.join(format!(".profiles.toml.{}.tmp", std::process::id()));
        // A file of this name is a leftover of this very process id: a crashed save.
        let _ = std::fs::remove_file(&temp);
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temp, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written.map_err(io(&self.path))
    }

    fn check_private(&self, meta: &std::fs::Metadata) -> Result<(), Error> {
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(Error::TooOpen {
                path: self.path.clone(),
                mode,
            });
        }
        Ok(())
    }
}

/// Saves `profile` as `name`; returns whether it became the current profile (the first
/// one does).
pub fn add(store: &Store, name: &str, profile: Profile, force: bool) -> Result<bool, Error> {
    check_name(name)?;
    check(&profile)?;
    let mut profiles = store.load()?;
    if profiles.profiles.contains_key(name) && !force {
        return Err(Error::Exists(name.to_owned()));
    }
    profiles.profiles.insert(name.to_owned(), profile);
    let current = profiles.current.is_none();
    if current {
        profiles.current = Some(name.to_owned());
    }
    store.save(&profiles)?;
    Ok(current)
}

fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "profile name {name:?}: use letters, digits, '-', '_' and '.'"
        )))
    }
}

fn check(profile: &Profile) -> Result<(), Error> {
    let claims =
        TokenClaims::decode(&profile.token).map_err(|e| Error::Invalid(format!("--token: {e}")))?;
    match &profile.server {
        Some(server) => check_address(server)
            .map_err(|why| Error::Invalid(format!("--server {server:?}: {why}")))?,
        None if claims.grpc_broadcast_address.is_none() => {
            return Err(Error::Invalid(
                "the token names no engine address (grpc_broadcast_address): pass --server \
                 host:port"
                    .into(),
            ));
        }
        None => {}
    }
    let tls = profile.tls();
    let files = [
        ("--tls-root-ca-file", &tls.root_ca_file),
        ("--tls-cert-file", &tls.cert_file),
        ("--tls-key-file", &tls.key_file),
    ];
    for (flag, file) in files {
        if let Some(f) = file
            && !f.is_file()
        {
            return Err(Error::Invalid(format!(
                "{flag} {}: no such file",
                f.display()
            )));
        }
    }
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        return Err(Error::Invalid(
            "--tls-cert-file and --tls-key-file go together".into(),
        ));
    }
    if tls.strategy == Tls::Mtls && tls.cert_file.is_none() {
        return Err(Error::Invalid(
            "--tls-strategy mtls needs --tls-cert-file and --tls-key-file".into(),
        ));
    }
    Ok(())
}

/// `host:port`, the form of `HATCHET_CLIENT_HOST_PORT` (no scheme: the TLS strategy
/// decides it).
pub fn check_address(address: &str) -> Result<(), &'static str> {
    if address.contains("://") {
        return Err("give host:port without a scheme");
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err("expected host:port"),
    }
}

/// `eyJhbG…x9Qk`: enough to tell two tokens apart, not enough to use one.
pub fn mask(token: &str) -> String {
    let chars: Vec<char> = token.chars().collect();
    if chars.len() < 24 {
        return "…".into();
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
pub(crate) mod tests;

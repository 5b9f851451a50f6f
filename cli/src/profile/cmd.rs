//! `adze profile add | list | use | remove | show`.

use std::path::PathBuf;

use adze_sdk::TokenClaims;
use serde::Deserialize;

use super::{Profile, Store, Tls, add, mask};

/// `adze profile …`
#[derive(clap::Subcommand)]
pub enum ProfileCmd {
    /// Save a token under a name (the first one saved becomes the current profile).
    Add {
        #[arg(long)]
        name: String,
        /// API token (`adze token create`).
        #[arg(long)]
        token: String,
        /// gRPC host:port of the engine (default: the token's grpc_broadcast_address).
        #[arg(long)]
        server: Option<String>,
        /// Transport security (default: none).
        #[arg(long, value_enum)]
        tls_strategy: Option<Tls>,
        /// PEM CA certificates to check the engine's certificate against (default: the
        /// public web roots).
        #[arg(long, visible_alias = "ca-file")]
        tls_root_ca_file: Option<PathBuf>,
        /// PEM certificate chain presented under `--tls-strategy mtls`.
        #[arg(long)]
        tls_cert_file: Option<PathBuf>,
        /// PEM private key of --tls-cert-file.
        #[arg(long)]
        tls_key_file: Option<PathBuf>,
        /// The name the engine's certificate must carry (default: the server's host).
        #[arg(long)]
        tls_server_name: Option<String>,
        /// Replace a profile of the same name.
        #[arg(long)]
        force: bool,
    },
    /// List the profiles; `*` marks the current one.
    List,
    /// Make a profile the current one: commands without --profile use it.
    Use { name: String },
    /// Forget a profile.
    Remove { name: String },
    /// Show a profile (default: the current one) with its token masked.
    Show {
        name: Option<String>,
        /// Print the whole token.
        #[arg(long)]
        reveal: bool,
    },
}

pub fn run(cmd: ProfileCmd) -> anyhow::Result<()> {
    let store = Store::locate(|key| std::env::var(key).ok())?;
    match cmd {
        ProfileCmd::Add {
            name,
            token,
            server,
            tls_strategy,
            tls_root_ca_file,
            tls_cert_file,
            tls_key_file,
            tls_server_name,
            force,
        } => {
            // Saved absolute: commands run from any directory.
            let absolute = |f: Option<PathBuf>| f.map(|f| std::path::absolute(&f).unwrap_or(f));
            let profile = Profile {
                server,
                tls_strategy,
                tls_root_ca_file: absolute(tls_root_ca_file),
                tls_cert_file: absolute(tls_cert_file),
                tls_key_file: absolute(tls_key_file),
                tls_server_name,
                ..Profile::of_token(token.trim())
            };
            let current = add(&store, &name, profile, force)?;
            eprintln!("saved profile {name:?} in {}", store.path().display());
            if current {
                eprintln!("{name:?} is the current profile");
            }
        }
        ProfileCmd::List => {
            let profiles = store.load()?;
            if profiles.profiles.is_empty() {
                eprintln!(
                    "no profiles yet: add one with `adze profile add --name <name> --token <token>`"
                );
            }
            let rows: Vec<(&String, Summary)> = profiles
                .profiles
                .iter()
                .map(|(name, p)| (name, Summary::of(p)))
                .collect();
            let name_width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0).max(4);
            let server_width = rows.iter().map(|(_, s)| s.server.len()).max().unwrap_or(0);
            if !rows.is_empty() {
                println!(
                    "  {:name_width$}  {:server_width$}  TENANT",
                    "NAME", "SERVER"
                );
            }
            for (name, s) in rows {
                let mark = if profiles.current.as_ref() == Some(name) {
                    "*"
                } else {
                    " "
                };
                println!(
                    "{mark} {name:name_width$}  {:server_width$}  {}",
                    s.server, s.tenant
                );
            }
        }
        ProfileCmd::Use { name } => {
            let mut profiles = store.load()?;
            profiles.get(&name)?;
            profiles.current = Some(name.clone());
            store.save(&profiles)?;
            eprintln!("{name:?} is the current profile");
        }
        ProfileCmd::Remove { name } => {
            let mut profiles = store.load()?;
            if profiles.profiles.remove(&name).is_none() {
                return Err(profiles.unknown(&name).into());
            }
            if profiles.current.as_deref() == Some(name.as_str()) {
                profiles.current = None;
                eprintln!(
                    "{name:?} was the current profile: choose another with `adze profile use`"
                );
            }
            store.save(&profiles)?;
            eprintln!("removed profile {name:?}");
        }
        ProfileCmd::Show { name, reveal } => {
            let profiles = store.load()?;
            let name = match name.or_else(|| profiles.current.clone()) {
                Some(n) => n,
                None => anyhow::bail!(
                    "no current profile: name one (`adze profile show <name>`) or choose one \
                     with `adze profile use <name>`"
                ),
            };
            let p = profiles.get(&name)?;
            let s = Summary::of(p);
            let current = if profiles.current.as_deref() == Some(name.as_str()) {
                " (current)"
            } else {
                ""
            };
            println!("profile  {name}{current}");
            println!("server   {}", s.server);
            println!("tenant   {}", s.tenant);
            println!("expires  {}", s.expires);
            let tls = p.tls();
            println!("tls      {}", tls.strategy.as_str());
            for (what, file) in [
                ("root CA ", &tls.root_ca_file),
                ("cert    ", &tls.cert_file),
                ("key     ", &tls.key_file),
            ] {
                if let Some(f) = file {
                    println!("{what} {}", f.display());
                }
            }
            if let Some(name) = &tls.server_name {
                println!("tls name {name}");
            }
            if reveal {
                println!("token    {}", p.token);
            } else {
                println!("token    {} (--reveal prints it whole)", mask(&p.token));
            }
        }
    }
    Ok(())
}

/// What `list` and `show` print about a profile, read from its token.
pub(super) struct Summary {
    pub(super) server: String,
    pub(super) tenant: String,
    pub(super) expires: String,
}

impl Summary {
    pub(super) fn of(p: &Profile) -> Summary {
        let claims = TokenClaims::decode(&p.token);
        let server = match (&p.server, claims.as_ref().ok()) {
            (Some(s), _) => s.clone(),
            (
                None,
                Some(TokenClaims {
                    grpc_broadcast_address: Some(a),
                    ..
                }),
            ) => format!("{a} (from the token)"),
            (None, _) => "-".into(),
        };
        let tenant = match &claims {
            Ok(c) => c.sub.clone(),
            Err(e) => format!("? ({e})"),
        };
        let expires = match expiry(&p.token) {
            Some(at) if at <= chrono::Utc::now() => format!("{} (expired)", rfc3339(at)),
            Some(at) => rfc3339(at),
            None => "-".into(),
        };
        Summary {
            server,
            tenant,
            expires,
        }
    }
}

fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The token's `exp` claim (the SDK reads the claims it connects with, not this one).
fn expiry(token: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    use base64::Engine as _;
    #[derive(Deserialize)]
    struct Exp {
        exp: i64,
    }
    let payload = token.trim().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let exp: Exp = serde_json::from_slice(&bytes).ok()?;
    chrono::DateTime::from_timestamp(exp.exp, 0)
}

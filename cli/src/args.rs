//! The command line (DESIGN.md §4).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Ferry backs up whole applications, restores them and moves them between clusters.
#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    propagate_version = true,
    after_help = "Examples:\n  ferry demo\n  ferry app apply -f shop.yaml\n  ferry backup create shop --wait\n  ferry restore create shop-20261121-103500-3fa2 --to-app shop-copy --rewrite /srv/shop=/srv/shop-copy --wait"
)]
pub struct Cli {
    /// URL of the controller (https:// with TLS) [default: the saved login's, else
    /// http://127.0.0.1:7420].
    #[arg(long, global = true, env = "FERRY_CONTROLLER")]
    pub controller: Option<String>,
    /// Bearer token (prefer --token-file or `ferry login`: a flag shows in `ps`).
    #[arg(long, global = true, env = "FERRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token.
    #[arg(long, global = true, env = "FERRY_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Team whose apps and backups to work with [default: the token's team; `default` for a
    /// token of every team].
    #[arg(long, global = true, env = "FERRY_TEAM")]
    pub team: Option<String>,
    /// PEM CA that signed the controller's certificate [default: the saved login's, else the
    /// system's roots].
    #[arg(long, global = true, env = "FERRY_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for a controller started with --tls-client-ca.
    #[arg(
        long,
        global = true,
        env = "FERRY_CLIENT_CERT",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// PEM key of --client-cert.
    #[arg(
        long,
        global = true,
        env = "FERRY_CLIENT_KEY",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// Saved login to use [default: the current one, see `ferry context`].
    #[arg(long, global = true, env = "FERRY_CONTEXT")]
    pub context: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register and inspect applications.
    #[command(subcommand)]
    App(AppCmd),
    /// Storage locations for archives.
    #[command(subcommand)]
    Storage(StorageCmd),
    /// Workers connected to the controller.
    #[command(subcommand)]
    Worker(WorkerCmd),
    /// Clusters that have live workers.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Back up applications and inspect backups.
    #[command(subcommand)]
    Backup(BackupCmd),
    /// Restore backups.
    #[command(subcommand)]
    Restore(RestoreCmd),
    /// Move an app to another cluster and/or team: a backup by its cluster's workers into s3
    /// storage, then a restore by the target cluster's workers, with the app registered there.
    #[command(
        after_help = "Examples:\n  ferry migrate shop --to-cluster dc-b --rewrite /srv/shop=/srv/shop \\\n      \
            --rewrite db-a.internal=db-b.internal --rewrite shop.example.com=shop.dc-b.example.com --wait\n  \
            ferry migrate shop --to-cluster dc-a --to-team payments --storage offsite\n\n\
            The source is never touched. Follow the halves with `ferry backup watch` and \
            `ferry --team T restore watch`."
    )]
    Migrate(MigrateArgs),
    /// Scheduled backups with retention.
    #[command(subcommand)]
    Schedule(ScheduleCmd),
    /// Tokens of callers and workers (admin).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Installations whose signed backups restore in full here (DESIGN: signed manifests).
    #[command(subcommand)]
    Trust(TrustCmd),
    /// Who did what: every mutating call and every denied one (admin).
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Show the token in use: its name, team and role.
    #[command(after_help = "Example:\n  ferry whoami")]
    Whoami,
    /// Save a controller and a token as a named context and make it current (like kubectl's
    /// contexts); later commands use it when --controller and --token are not given.
    #[command(
        after_help = "Examples:\n  ferry login https://ferry.internal:7420 --token-file ~/ops.token --ca-cert ca.pem\n  \
            ferry login https://ferry.dc-b:7420 --token-file b.token --name dc-b\n\n\
            The token is checked, then copied into the config directory ($FERRY_CONFIG_DIR, else\n\
            $XDG_CONFIG_HOME/ferry or ~/.config/ferry), readable by you only."
    )]
    Login(LoginArgs),
    /// Forget a saved context and its token [default: the current one].
    #[command(after_help = "Example:\n  ferry logout dc-b")]
    Logout { name: Option<String> },
    /// Saved contexts.
    #[command(subcommand)]
    Context(ContextCmd),
    /// The one-command tour: back up an example app, damage it, restore it, verify it.
    #[command(after_help = "Example:\n  ferry demo")]
    Demo(DemoArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  ferry completions bash > /etc/bash_completion.d/ferry\n  ferry completions zsh > \"${fpath[1]}/_ferry\"\n  ferry completions fish > ~/.config/fish/completions/ferry.fish"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    pub app: String,
    /// The cluster whose workers restore the app.
    #[arg(long)]
    pub to_cluster: String,
    /// The team the app moves to [default: this team].
    #[arg(long)]
    pub to_team: Option<String>,
    /// The s3 location carrying the data [default: the first s3 location].
    #[arg(long)]
    pub storage: Option<String>,
    /// OLD=NEW applied to paths, database names, hosts and config values (repeatable).
    #[arg(long = "rewrite", value_name = "OLD=NEW")]
    pub rewrites: Vec<String>,
    /// Wait for both halves, showing progress; exit 1 if the migration does not complete.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum AppCmd {
    /// Register or update an app from its manifest.
    #[command(after_help = "Example:\n  ferry app apply -f shop.yaml")]
    Apply {
        /// The app manifest (YAML); `-` reads stdin.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// List the team's apps.
    #[command(after_help = "Example:\n  ferry app list -o json")]
    List,
    /// Show an app's manifest.
    #[command(after_help = "Example:\n  ferry app get shop")]
    Get { name: String },
    /// Forget an app (its backups stay).
    #[command(after_help = "Example:\n  ferry app delete shop")]
    Delete { name: String },
    /// From when to when each `pitr: true` database can be restored (`restore create APP --at`),
    /// the gaps in between, and how far behind its log archive is.
    #[command(after_help = "Example:\n  ferry app recovery-window shop")]
    RecoveryWindow { name: String },
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run: size does not matter
pub enum StorageCmd {
    /// Add a storage location: a local directory of one cluster, or an S3-compatible bucket.
    #[command(
        group = clap::ArgGroup::new("backend").args(["local", "s3"]).required(true),
        after_help = "Examples:\n  \
            ferry storage add nas --local /mnt/nas/ferry --cluster dc-a\n  \
            ferry storage add offsite --s3 --endpoint https://s3.eu-central-1.amazonaws.com \\\n      \
            --bucket acme-ferry --prefix prod --region eu-central-1\n  \
            ferry storage add minio --s3 --endpoint http://minio.internal:9000 --bucket ferry \\\n      \
            --path-style --access-key-env MINIO_ACCESS_KEY --secret-key-env MINIO_SECRET_KEY\n\n\
            S3 credentials are never sent or stored: the controller and every worker read them \
            from the\nenvironment variables named by --access-key-env and --secret-key-env \
            (default AWS_ACCESS_KEY_ID\nand AWS_SECRET_ACCESS_KEY)."
    )]
    Add {
        name: String,
        /// A local directory, reachable by the workers of one cluster.
        #[arg(long, value_name = "PATH", requires = "cluster")]
        local: Option<PathBuf>,
        /// The cluster whose workers reach the local directory.
        #[arg(long, requires = "local", conflicts_with = "s3")]
        cluster: Option<String>,
        /// An S3-compatible bucket, reachable from every cluster.
        #[arg(long, requires_all = ["endpoint", "bucket"])]
        s3: bool,
        /// The S3 endpoint URL (https://… or http://…).
        #[arg(
            long,
            value_name = "URL",
            requires = "s3",
            conflicts_with = "local",
            value_parser = |s: &str| if s.starts_with("https://") || s.starts_with("http://") {
                Ok(s.to_owned())
            } else {
                Err(format!("{s:?} is not an http:// or https:// URL"))
            }
        )]
        endpoint: Option<String>,
        /// The bucket (it must exist).
        #[arg(long, requires = "s3", conflicts_with = "local")]
        bucket: Option<String>,
        /// Key prefix for everything Ferry writes in the bucket.
        #[arg(long, requires = "s3", conflicts_with = "local")]
        prefix: Option<String>,
        /// Region to sign requests for [default: us-east-1].
        #[arg(long, requires = "s3", conflicts_with = "local")]
        region: Option<String>,
        /// Address the bucket in the path (http://host/bucket/key), as MinIO and most
        /// self-hosted servers need, instead of as a host name (http://bucket.host/key).
        #[arg(long, requires = "s3", conflicts_with = "local")]
        path_style: bool,
        /// Environment variable holding the access key [default: AWS_ACCESS_KEY_ID].
        #[arg(
            long,
            value_name = "VAR",
            requires = "s3",
            conflicts_with = "local",
            value_parser = |s: &str| if s.is_empty() || s.contains(['=', '\0']) {
                Err(format!("{s:?} is not the name of an environment variable"))
            } else {
                Ok(s.to_owned())
            }
        )]
        access_key_env: Option<String>,
        /// Environment variable holding the secret key [default: AWS_SECRET_ACCESS_KEY].
        #[arg(
            long,
            value_name = "VAR",
            requires = "s3",
            conflicts_with = "local",
            value_parser = |s: &str| if s.is_empty() || s.contains(['=', '\0']) {
                Err(format!("{s:?} is not the name of an environment variable"))
            } else {
                Ok(s.to_owned())
            }
        )]
        secret_key_env: Option<String>,
        /// Encrypt every archive written here to this age X25519 recipient (`age1…`;
        /// repeatable). Workers back up with public keys only; restoring needs a worker started
        /// with --identity-file holding one of the recipients' identities.
        #[arg(long = "encrypt-to", value_name = "RECIPIENT")]
        encrypt_to: Vec<String>,
    },
    /// Replace an encrypted location's recipients: new backups use the new ones at once, and
    /// every existing backup's key file is resealed to them here, on this machine (the
    /// controller never sees an identity). Archives are not rewritten.
    #[command(
        after_help = "Example:\n  ferry storage rotate-recipients offsite \\\n      \
        --encrypt-to age1new… --identity-file old.key --identity-file new.key\n\n\
        Give identities that open every existing key file (the old recipients'); adding the new\n\
        recipients' identity too covers backups that started while the rotation ran."
    )]
    RotateRecipients {
        name: String,
        /// The new recipients (repeatable); the old ones not named here stop opening the
        /// location's backups.
        #[arg(long = "encrypt-to", value_name = "RECIPIENT", required = true)]
        encrypt_to: Vec<String>,
        /// An age identity file that opens the existing key files (repeatable).
        #[arg(long = "identity-file", value_name = "FILE", required = true)]
        identity_file: Vec<PathBuf>,
    },
    /// List storage locations.
    #[command(after_help = "Example:\n  ferry storage list")]
    List,
    /// List a location now and bring the catalog in line with it: backups another installation
    /// wrote there appear, backups whose manifest was deleted disappear. (The controller also
    /// does this periodically, --sync-interval, and when a location is added.)
    #[command(after_help = "Example:\n  ferry storage sync offsite")]
    Sync { name: String },
    /// Delete the repository packs that no backup references any more (deleted and expired
    /// backups free their space this way; the controller also does it every --gc-interval).
    #[command(after_help = "Example:\n  ferry storage gc local --dry-run")]
    Gc {
        name: String,
        /// Only say what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkerCmd {
    /// List live workers.
    #[command(after_help = "Example:\n  ferry worker list")]
    List {
        /// Only this cluster's workers.
        #[arg(long)]
        cluster: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// List clusters with live workers.
    #[command(after_help = "Example:\n  ferry cluster list")]
    List,
}

#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// Back up an app.
    #[command(
        after_help = "Example:\n  ferry backup create shop --label reason=pre-upgrade --wait"
    )]
    Create {
        app: String,
        /// Storage location [default: the one serving the app's cluster].
        #[arg(long)]
        storage: Option<String>,
        /// Expire the backup after this long (e.g. 7d, 12h).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
        /// A label key=value (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Write every volume as a self-contained archive (tar.zst) instead of incrementally
        /// into the location's repository.
        #[arg(long)]
        full: bool,
        /// Wait for the backup to finish, showing progress; exit 1 if it does not complete.
        #[arg(long)]
        wait: bool,
    },
    /// List the team's backups, newest first (fetched page by page).
    #[command(after_help = "Example:\n  ferry backup list --app shop --limit 20")]
    List {
        #[arg(long)]
        app: Option<String>,
        /// At most this many (the newest).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Describe a backup and its shards.
    #[command(after_help = "Example:\n  ferry backup get shop-20261121-103500-3fa2")]
    Get { id: String },
    /// Follow a backup until it ends.
    #[command(after_help = "Example:\n  ferry backup watch shop-20261121-103500-3fa2")]
    Watch { id: String },
    /// Stop a running backup; nothing of it is kept.
    #[command(after_help = "Example:\n  ferry backup cancel shop-20261121-103500-3fa2 --wait")]
    Cancel {
        id: String,
        /// Wait until it has stopped.
        #[arg(long)]
        wait: bool,
    },
    /// Re-read every archive of a backup and check its checksum, restoring nothing; exit 1 and
    /// name each bad archive if any fails.
    #[command(after_help = "Example:\n  ferry backup verify shop-20261121-103500-3fa2")]
    Verify {
        id: String,
        /// Incremental volumes: read every chunk they reference and check its hash (slow: reads
        /// the whole backup), instead of checking that every pack exists.
        #[arg(long)]
        read_data: bool,
        /// Return at once with the verify job instead of waiting for its verdict.
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete a finished backup: its archives in storage and its catalog entry.
    #[command(after_help = "Example:\n  ferry backup delete shop-20261121-103500-3fa2")]
    Delete { id: String },
    /// Write a backup to one portable `.ferry` file (a tar: manifest.json, then each archive),
    /// checking every archive's checksum on the way.
    #[command(
        after_help = "Example:\n  ferry backup export shop-20261121-103500-3fa2 -f shop.ferry\n\n\
            (-o is every command's output format, so the file is given with -f/--file.)"
    )]
    Export {
        id: String,
        /// The file to write (replaced only once the export is whole).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Take a backup from a `.ferry` file (exported by this or another installation) into a
    /// storage location of this one, in this team; it then restores like any other.
    #[command(after_help = "Example:\n  ferry backup import shop.ferry --storage offsite")]
    Import {
        file: PathBuf,
        /// The storage location to write it to.
        #[arg(long)]
        storage: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RestoreCmd {
    /// Restore a backup (into a new copy unless --overwrite).
    #[command(
        after_help = "Examples:\n  ferry restore create shop-20261121-103500-3fa2 --to-app shop-copy \\\n      --rewrite /srv/shop=/srv/shop-copy --rewrite shop=shop_copy --wait\n  ferry restore create shop-20261121-103500-3fa2   # the app is gone: bring it back as it was\n  ferry restore create shop --at 2026-12-02T16:39:00Z --to-app shop-copy --rewrite shop=shop_copy --wait\n  ferry restore create shop --at -2h --to-app shop-copy --rewrite shop=shop_copy"
    )]
    Create {
        /// A backup id; with --at, an app name.
        backup_id: String,
        /// Point in time: restore the app (named instead of a backup) as it was at TIME
        /// (RFC 3339, or relative like -2h): `pitr: true` databases are replayed to it, the rest
        /// comes from the newest backup before it.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// The app that receives the data [default: the backed-up app].
        #[arg(long)]
        to_app: Option<String>,
        /// The cluster of a new target app [default: the backup's].
        #[arg(long)]
        to_cluster: Option<String>,
        /// Replace what the target holds.
        #[arg(long)]
        overwrite: bool,
        /// Give restored files the archived uid/gid even where the archived user or group name
        /// exists on the target host under another id (by default the name wins, like GNU tar).
        #[arg(long)]
        numeric_owner: bool,
        /// OLD=NEW applied to paths, database names, hosts and config values (repeatable).
        #[arg(long = "rewrite", value_name = "OLD=NEW")]
        rewrites: Vec<String>,
        /// Wait for the restore to finish, showing progress; exit 1 if it does not complete.
        #[arg(long)]
        wait: bool,
    },
    /// List the team's restores, newest first (fetched page by page).
    #[command(after_help = "Example:\n  ferry restore list --limit 20")]
    List {
        #[arg(long)]
        app: Option<String>,
        /// At most this many (the newest).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Describe a restore.
    #[command(after_help = "Example:\n  ferry restore get restore-shop-copy-20261121-104000-9c1d")]
    Get { id: String },
    /// Follow a restore until it ends; exit 1 unless it completed.
    #[command(
        after_help = "Example:\n  ferry restore watch restore-shop-copy-20261121-104000-9c1d"
    )]
    Watch { id: String },
    /// Stop a running restore (the target may hold part of the data).
    #[command(
        after_help = "Example:\n  ferry restore cancel restore-shop-copy-20261121-104000-9c1d"
    )]
    Cancel {
        id: String,
        /// Wait until it has stopped.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCmd {
    /// Back up an app on a cron expression or a preset period, keeping the newest N.
    #[command(
        after_help = "Examples:\n  ferry schedule create nightly --app shop --cron '30 2 * * *' --tz Europe/Berlin --keep 7\n  ferry schedule create hourly-db --app shop --every hourly --keep 24\n\nCron: 5 fields (minute hour day month weekday), or 6 with seconds first; UTC unless --tz."
    )]
    Create {
        name: String,
        #[arg(long)]
        app: String,
        /// A cron expression.
        #[arg(long, conflicts_with = "every", required_unless_present = "every")]
        cron: Option<String>,
        /// An IANA time zone for --cron (e.g. America/New_York) [default: UTC].
        #[arg(long, requires = "cron")]
        tz: Option<String>,
        /// A preset period.
        #[arg(long, value_parser = ["hourly", "daily", "weekly", "monthly"])]
        every: Option<String>,
        /// Keep the newest N completed backups of this schedule; older ones are deleted.
        #[arg(long)]
        keep: Option<u32>,
        /// Keep every backup a point-in-time restore to a moment of the last DURATION needs
        /// (e.g. 7d): with `pitr: true` databases, the app stays restorable to any moment of
        /// the window. With --keep, a backup either keeps stays.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        keep_window: Option<std::time::Duration>,
        /// Storage location [default: the one serving the app's cluster].
        #[arg(long)]
        storage: Option<String>,
    },
    /// List the team's schedules with their next run.
    #[command(after_help = "Example:\n  ferry schedule list")]
    List,
    /// Show a schedule.
    #[command(after_help = "Example:\n  ferry schedule get nightly")]
    Get { name: String },
    /// Stop a schedule from starting backups.
    #[command(after_help = "Example:\n  ferry schedule pause nightly")]
    Pause { name: String },
    /// Start it again from its next matching time.
    #[command(after_help = "Example:\n  ferry schedule resume nightly")]
    Resume { name: String },
    /// Delete a schedule (its backups stay).
    #[command(after_help = "Example:\n  ferry schedule delete nightly")]
    Delete { name: String },
}

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The controller's URL.
    pub url: String,
    /// File holding the token.
    #[arg(long)]
    pub token_file: PathBuf,
    /// Name of the context [default: the URL's host].
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ContextCmd {
    /// List saved contexts; the current one is marked.
    #[command(after_help = "Example:\n  ferry context list")]
    List,
    /// Make a saved context the current one.
    #[command(after_help = "Example:\n  ferry context use dc-b")]
    Use { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token; its secret is printed once (`-o json`: as `token`).
    #[command(
        group = clap::ArgGroup::new("kind").args(["role", "worker"]).required(true),
        after_help = "Examples:\n  ferry token create ci --team payments --role operator --ttl 90d\n  \
            ferry token create grafana --all-teams --role viewer\n  \
            ferry token create dc-a-workers --worker --cluster dc-a -o json | jq -r .token > dc-a.token\n\n\
            Roles: viewer (list, get, watch), operator (+ back up, verify, export, restore into a new app,\n\
            schedules), admin (+ apps, restore --overwrite, delete/import backups, migrate, tokens, audit).\n\
            Storage locations, worker join tokens and tokens of every team need an admin token of every team."
    )]
    Create {
        name: String,
        /// The role of a caller token.
        #[arg(long, value_parser = ["viewer", "operator", "admin"], conflicts_with = "worker")]
        role: Option<String>,
        /// A token of every team instead of one (needs a token of every team).
        #[arg(long, conflicts_with = "worker")]
        all_teams: bool,
        /// A worker join token for --cluster (needs a token of every team).
        #[arg(long, requires = "cluster")]
        worker: bool,
        /// The cluster a join token's workers serve.
        #[arg(long, requires = "worker")]
        cluster: Option<String>,
        /// Expire after this long (e.g. 90d, 12h) [default: never].
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// List tokens (never their secrets).
    #[command(after_help = "Example:\n  ferry token list")]
    List,
    /// Revoke a token: it stops working at once; a join token's workers lose their session.
    #[command(after_help = "Example:\n  ferry token revoke ci")]
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TrustCmd {
    /// Trust another installation's signed manifests: its backups (by import or sync) then
    /// restore in full, exec commands and hooks included. Others restore data only.
    #[command(
        after_help = "Example:\n  ferry trust add dc-b --public-key ed25519:…\n\n\
            The key is what `ferry trust list` shows on the other installation (\"this installation\")."
    )]
    Add {
        name: String,
        /// The other installation's public key (`ed25519:BASE64`).
        #[arg(long)]
        public_key: String,
    },
    /// This installation's public key and the installations it trusts.
    #[command(after_help = "Example:\n  ferry trust list")]
    List,
    /// Stop trusting an installation.
    #[command(after_help = "Example:\n  ferry trust remove dc-b")]
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// List audit entries, oldest first.
    #[command(
        after_help = "Examples:\n  ferry audit list --since 7d\n  ferry audit list --token ci --since 2026-12-01T00:00:00Z -o json"
    )]
    List {
        /// How far back: a duration (24h, 7d) or an RFC 3339 time.
        #[arg(long, default_value = "24h")]
        since: String,
        /// Only the calls of the token named NAME (your own token then comes from FERRY_TOKEN,
        /// --token-file or `ferry login`).
        #[arg(long, value_name = "NAME")]
        token: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Work in this directory instead of a temporary one (kept afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

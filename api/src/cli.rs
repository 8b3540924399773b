//! The `flowtrace` commands.

use anyhow::Context as _;

use crate::app::{self, Database};
use crate::config::{Cli, Command, DbAction, MigrateAction, PoliciesAction, ServeArgs};
use crate::graphql;

/// The `flowtrace` program: `.env`, flags, logging, then the command.
pub async fn main() -> anyhow::Result<()> {
    use clap::Parser as _;
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, Layer};
    crate::config::load_dotenv()?;
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match cli.log_format {
        crate::config::LogFormat::Json => logs.json().boxed(),
        crate::config::LogFormat::Text => logs.boxed(),
    };
    let rate_limit = crate::log_limit::RateLimit::default();
    tracing_subscriber::registry().with(crate::log_limit::filtered(logs, filter, rate_limit)).init();
    run(cli).await
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve(default_serve()?)) {
        Command::Schema => {
            print!("{}", graphql::sdl());
            Ok(())
        }
        Command::HashApiKey { key } => {
            println!("{}", crate::auth::hash_api_key(&key));
            Ok(())
        }
        Command::Serve(args) => serve(&cli.database, args).await,
        Command::Migrate { action } => {
            let db = Database::open(&cli.database).await?;
            let result = migrate(&db, action).await;
            db.close().await;
            result
        }
        Command::Policies { action, policies } => {
            let db = Database::open(&cli.database).await?;
            let result = async {
                db.store.wait_until_reachable(std::time::Duration::from_secs(30)).await?;
                let mode = db.store.mode().await?;
                let policies = policies.policies();
                println!("storage: {}", mode.describe());
                match action {
                    PoliciesAction::Show => {
                        policies.validate(db.store.orm()).await?;
                        for line in db.store.policy_jobs().await? {
                            println!("{line}");
                        }
                    }
                    PoliciesAction::Apply => {
                        let changed = policies.apply(db.store.orm()).await?;
                        if changed.is_empty() {
                            println!("policies already as configured; nothing changed");
                        }
                        for change in changed {
                            println!("changed: {change}");
                        }
                    }
                }
                anyhow::Ok(())
            }
            .await;
            db.close().await;
            result
        }
        Command::Db { action: DbAction::Url } => crate::db_commands::print_url(&cli.database).await,
        Command::Psql { args } => crate::db_commands::psql(&cli.database, args).await,
        Command::Import(args) => {
            let db = Database::open(&cli.database).await?;
            let result = async {
                db.store.wait_until_reachable(std::time::Duration::from_secs(30)).await?;
                db.store.migrate_up().await?;
                crate::import::run(&db.store, &args).await
            }
            .await;
            db.close().await;
            // Exit status: 0 everything stored, 2 finished with rows skipped, 1 failed (see README).
            if result?.skipped.is_empty() { Ok(()) } else { std::process::exit(2) }
        }
        Command::Export(args) => {
            let db = Database::open(&cli.database).await?;
            let result = crate::export::run(&db.store, args).await;
            db.close().await;
            result
        }
        Command::Seed(args) => {
            let db = Database::open(&cli.database).await?;
            let result = async {
                db.store.wait_until_reachable(std::time::Duration::from_secs(30)).await?;
                db.store.migrate_up().await?;
                crate::seed::seed(&db.store, args.sessions, args.traces_per_session).await?;
                println!("seeded {} sessions of {} traces", args.sessions, args.traces_per_session);
                anyhow::Ok(())
            }
            .await;
            db.close().await;
            result
        }
    }
}

/// `flowtrace` with no command: serve with flags read from the environment.
fn default_serve() -> anyhow::Result<ServeArgs> {
    use clap::Parser;
    #[derive(Parser)]
    struct ServeOnly {
        #[command(flatten)]
        serve: ServeArgs,
    }
    Ok(ServeOnly::try_parse_from(["flowtrace"])?.serve)
}

async fn serve(database: &crate::config::DatabaseArgs, args: ServeArgs) -> anyhow::Result<()> {
    // A configuration that cannot serve fails before any database is started, initialised or migrated.
    app::check_serve_args(&args)?;
    let listener = app::bind(args.bind).await?;
    let db = Database::open(database).await?;
    let result = async {
        let server = app::spawn_on(listener, db.store.clone(), args).await?;
        let stop = server.stopper();
        tokio::spawn(async move {
            app::shutdown_signal().await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stop.send(true);
        });
        server.wait().await
    }
    .await;
    db.close().await;
    result
}

async fn migrate(db: &Database, action: MigrateAction) -> anyhow::Result<()> {
    db.store.wait_until_reachable(std::time::Duration::from_secs(30)).await.context("connecting to the database")?;
    match action {
        MigrateAction::Up => db.store.migrate_up().await?,
        MigrateAction::Down { steps, all } => db.store.migrate_down(if all { None } else { Some(steps) }).await?,
        MigrateAction::Status => {}
    }
    for (name, applied) in db.store.migration_status().await? {
        println!("{} {name}", if applied { "applied" } else { "pending" });
    }
    println!("storage: {}", db.store.mode().await?.describe());
    Ok(())
}

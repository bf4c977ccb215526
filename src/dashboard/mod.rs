//! The dashboard (docs/dashboard.md): server-rendered HTML pages over the same data, through the
//! same functions, as the JSON API — overview, leaderboard, a page per miner, the Pareto view and
//! the weights history. Read-only and public like the API's read endpoints; every miner-provided
//! string is escaped ([`html::esc`]).

pub mod html;
pub mod pages;
pub mod svg;

use actix_web::web;

/// Registers the dashboard's routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(pages::overview))
        .route("/dashboard", web::get().to(pages::overview))
        .route("/leaderboard", web::get().to(pages::leaderboard))
        .route("/miners/{uid}", web::get().to(pages::miner))
        .route("/pareto", web::get().to(pages::pareto))
        .route("/weights", web::get().to(pages::weights));
}

/// The dashboard's route patterns (kept out of the OpenAPI document, which describes the JSON API).
pub const ROUTE_PATTERNS: &[&str] = &[
    "/",
    "/dashboard",
    "/leaderboard",
    "/miners/{uid}",
    "/pareto",
    "/weights",
];

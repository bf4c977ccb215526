//! The dashboard's pages (docs/dashboard.md §1). Each reads through the JSON API's own functions
//! (`api::status::current`, `api::scores::latest_scores`, …) so a page and its endpoint always
//! show the same numbers; what the API has no endpoint for comes from `db::history`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use actix_web::{web, HttpResponse};
use kinitro_actors::scoring::{self, pareto, MinerRates, ScoringOutcome, ScoringParams};
use serde::Deserialize;

use super::html::{empty, esc, heat, page, percent};
use super::svg::{self, Point, Series};
use crate::api::{self, error::ApiError, AppState};
use crate::db::history;
use crate::wire::{Miner, Scores};

/// Cycles shown in the overview and in a miner's history.
const RECENT: i64 = 10;

/// A failed read: the error page (503 for the database, like the API).
fn failed(e: ApiError) -> HttpResponse {
    let mut r = page(
        "Unavailable",
        "",
        &format!("<p>{}</p>", esc(&e.detail)),
        false,
    );
    *r.status_mut() = e.status;
    r
}

/// The latest completed cycle's rates as scoring input, and the scoring outcome recomputed from
/// them with the cycle's episode count (docs/dashboard.md §1.2).
struct Scored {
    envs: Vec<String>,
    miners: Vec<MinerRates>,
    outcome: Option<ScoringOutcome>,
    episodes: i64,
}

fn scored(scores: &Scores, snapshot: &[Miner]) -> Scored {
    let envs: Vec<String> =
        serde_json::from_value(scores.cycle.env_ids.clone()).unwrap_or_default();
    let blocks: HashMap<i32, Option<i64>> =
        snapshot.iter().map(|m| (m.uid, m.commit_block)).collect();
    let mut miners: Vec<MinerRates> = scores
        .scores
        .iter()
        .filter_map(|(uid, rates)| {
            let uid: u32 = uid.parse().ok()?;
            Some(MinerRates {
                uid,
                block: blocks
                    .get(&(uid as i32))
                    .copied()
                    .flatten()
                    .and_then(|b| u64::try_from(b).ok()),
                rates: envs.iter().map(|e| rates.get(e).copied()).collect(),
            })
        })
        .collect();
    miners.sort_by_key(|m| m.uid);
    let episodes = i64::from(scores.cycle.episodes_per_env);
    let params = ScoringParams {
        episodes_per_env: episodes,
        ..ScoringParams::default()
    };
    let outcome = scoring::score(envs.len(), &miners, &params).ok();
    Scored {
        envs,
        miners,
        outcome,
        episodes,
    }
}

/// The stored weights of the latest cycle that wrote some: uid → weight.
async fn latest_weights(state: &AppState) -> Result<BTreeMap<u32, f64>, ApiError> {
    let mut conn = state.public_conn().await?;
    let row = crate::db::views::weights(&mut conn, None).await?;
    Ok(row
        .map(|r| weight_map(&api::weights::body(r).weights))
        .unwrap_or_default())
}

/// A stored `{"<uid>": weight}` object as uid → weight (entries that do not parse are left out).
fn weight_map(weights: &serde_json::Value) -> BTreeMap<u32, f64> {
    serde_json::from_value::<BTreeMap<String, f64>>(weights.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(uid, w)| Some((uid.parse().ok()?, w)))
        .collect()
}

/// `GET /` and `GET /dashboard`: service status, the running cycle's progress, recent cycles.
pub async fn overview(state: web::Data<AppState>) -> HttpResponse {
    let status = api::status::current(&state).await.value;
    let mut body = String::new();
    let _ = write!(
        body,
        "<table id=\"service\"><tr><th class=\"l\">service</th><td id=\"service-status\">{}</td></tr>\
         <tr><th class=\"l\">block</th><td>{}</td></tr><tr><th class=\"l\">miners registered</th><td>{}</td></tr>\
         <tr><th class=\"l\">cycles</th><td>{}</td></tr><tr><th class=\"l\">next cycle in</th><td>{}</td></tr></table>",
        esc(&status.status),
        status.current_block.map_or("–".into(), |b| b.to_string()),
        status.miners_registered,
        status.total_cycles,
        status.next_eval_in_seconds.map_or("–".into(), |s| format!("{s} s")),
    );
    body.push_str("<h2>Current cycle</h2>");
    let counts = api::tasks::task_counts(&state, None).await;
    match (&status.current_cycle, &counts) {
        (Some(cycle), Ok(counts)) => {
            use kinitro_actors::states::TaskStatus::*;
            let total = counts.total();
            let done = counts.count(Completed) + counts.count(Failed) + counts.count(Cancelled);
            // A count over the cycle's tasks: cached like the API's public reads (docs/api.md §1.3).
            let pace = state
                .public
                .pace
                .get_or(
                    cycle.id,
                    api::cache::bounded(async {
                        let mut conn = state.public_conn().await?;
                        Ok(history::finished_since(&mut conn, cycle.id, 60).await?)
                    }),
                )
                .await
                .ok();
            let per_s = pace.map(|n| n as f64 / 60.0);
            let eta = per_s
                .filter(|r| *r > 0.0)
                .map(|r| format!("{:.0} s", (total - done) as f64 / r));
            let pct = if total > 0 {
                done as f64 * 100.0 / total as f64
            } else {
                0.0
            };
            let _ = write!(
                body,
                "<p>cycle {} at block {} · started {}</p>\
                 <p><progress id=\"cycle-progress\" value=\"{done}\" max=\"{total}\"></progress> \
                 <span id=\"cycle-done\">{done}</span> / <span id=\"cycle-total\">{total}</span> tasks ({pct:.1}%) · \
                 {} episodes/s · ETA {} · {} executors active</p>",
                cycle.id,
                cycle.block_number,
                esc(&cycle.started_at),
                per_s.map_or("–".into(), |r| format!("{r:.2}")),
                eta.unwrap_or_else(|| "–".into()),
                counts.active_executor_count(),
            );
        }
        _ => body.push_str("<p class=\"muted\" id=\"no-cycle\">No cycle is running.</p>"),
    }
    body.push_str("<h2>Recent cycles</h2>");
    let recent = match state.public_conn().await {
        Ok(mut conn) => history::recent_cycles(&mut conn, RECENT)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    match recent {
        Ok(cycles) => {
            body.push_str(
                "<table id=\"cycles\"><tr><th>cycle</th><th>block</th><th class=\"l\">status</th>\
                 <th>miners</th><th>envs</th><th>duration</th><th class=\"l\">started</th></tr>",
            );
            for c in cycles {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
                    c.id,
                    c.block_number,
                    c.status.as_str(),
                    c.n_miners.map_or("–".into(), |n| n.to_string()),
                    c.n_environments.map_or("–".into(), |n| n.to_string()),
                    c.duration_seconds.map_or("–".into(), |d| format!("{d:.0} s")),
                    esc(&crate::wire::timestamp(c.started_at)),
                );
            }
            body.push_str("</table>");
        }
        Err(e) => {
            let _ = write!(body, "<p>database: {}</p>", esc(&e.detail));
        }
    }
    let _ = write!(
        body,
        "<p class=\"muted\">database: <span id=\"database\">{}</span></p>",
        if counts.is_ok() {
            "connected"
        } else {
            "unavailable"
        }
    );
    page("Overview", "/", &body, status.is_evaluating)
}

/// The leaderboard's sort keys.
#[derive(Debug, Deserialize)]
pub struct SortQuery {
    /// `weight` (default), `uid`, `points`, `block`, `mean`, or `env<i>`.
    sort: Option<String>,
}

/// `GET /leaderboard`: every miner of the latest completed cycle with its rates, points and weight.
pub async fn leaderboard(state: web::Data<AppState>, query: web::Query<SortQuery>) -> HttpResponse {
    let (scores, miners, weights) = match (
        api::scores::latest_scores(&state).await,
        api::miners::current(&state).await,
        latest_weights(&state).await,
    ) {
        (Ok(s), Ok(m), Ok(w)) => (s, m.value.miners.clone(), w),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return failed(e),
    };
    let Some(scores) = scores else {
        return empty("Leaderboard", "/leaderboard", "No completed cycle yet.");
    };
    let s = scored(&scores, &miners);
    let points: HashMap<u32, f64> = s
        .outcome
        .as_ref()
        .map(|o| {
            o.uids
                .iter()
                .copied()
                .zip(o.points.iter().copied())
                .collect()
        })
        .unwrap_or_default();
    let by_uid: HashMap<i32, &Miner> = miners.iter().map(|m| (m.uid, m)).collect();
    let mut uids: Vec<i32> = by_uid.keys().copied().collect();
    for m in &s.miners {
        if !by_uid.contains_key(&(m.uid as i32)) {
            uids.push(m.uid as i32);
        }
    }
    let rates: HashMap<i32, &MinerRates> = s.miners.iter().map(|m| (m.uid as i32, m)).collect();
    let mean = |uid: i32| -> Option<f64> {
        let r = rates.get(&uid)?;
        let known: Vec<f64> = r.rates.iter().flatten().copied().collect();
        (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64)
    };
    let weight = |uid: i32| weights.get(&(uid as u32)).copied().unwrap_or(0.0);
    let block = |uid: i32| {
        by_uid
            .get(&uid)
            .and_then(|m| m.commit_block)
            .unwrap_or(i64::MAX)
    };
    let sort = query.sort.as_deref().unwrap_or("weight");
    let env_rate = |uid: i32, e: usize| {
        rates
            .get(&uid)
            .and_then(|r| r.rates.get(e).copied().flatten())
    };
    match sort {
        "uid" => uids.sort(),
        "block" => uids.sort_by_key(|u| (block(*u), *u)),
        "points" => uids.sort_by(|a, b| {
            points
                .get(&(*b as u32))
                .unwrap_or(&0.0)
                .total_cmp(points.get(&(*a as u32)).unwrap_or(&0.0))
                .then(a.cmp(b))
        }),
        "mean" => uids.sort_by(|a, b| {
            mean(*b)
                .unwrap_or(-1.0)
                .total_cmp(&mean(*a).unwrap_or(-1.0))
                .then(a.cmp(b))
        }),
        env if env.starts_with("env") => {
            let e: usize = env[3..].parse().unwrap_or(0);
            uids.sort_by(|a, b| {
                env_rate(*b, e)
                    .unwrap_or(-1.0)
                    .total_cmp(&env_rate(*a, e).unwrap_or(-1.0))
                    .then(a.cmp(b))
            });
        }
        _ => uids.sort_by(|a, b| weight(*b).total_cmp(&weight(*a)).then(a.cmp(b))),
    }
    let head = |key: &str, label: &str, class: &str| {
        format!(
            "<th{class}><a href=\"/leaderboard?sort={key}\">{}</a></th>",
            esc(label)
        )
    };
    let mut body = format!(
        "<p>cycle {} · block {} · {} episodes per environment</p><table id=\"leaderboard\"><tr>{}<th class=\"l\">hotkey</th><th class=\"l\">repo</th>",
        scores.cycle_id,
        scores.block,
        s.episodes,
        head("uid", "uid", "")
    );
    for (i, env) in s.envs.iter().enumerate() {
        body += &head(&format!("env{i}"), env.trim_start_matches("metaworld/"), "");
    }
    body += &head("mean", "mean", "");
    body += &head("points", "points", "");
    body += &head("weight", "weight", "");
    body += &head("block", "first commit", "");
    body += "<th class=\"l\">status</th><th class=\"l\">reason</th></tr>";
    for uid in uids {
        let m = by_uid.get(&uid);
        let _ = write!(
            body,
            "<tr id=\"miner-{uid}\"><td><a href=\"/miners/{uid}\">{uid}</a></td><td class=\"l\">{}</td><td class=\"l repo\">{}</td>",
            esc(m.map_or("", |m| m.hotkey.as_str()).get(..12).unwrap_or(m.map_or("", |m| m.hotkey.as_str()))),
            esc(m.and_then(|m| m.repo.as_deref()).unwrap_or("–")),
        );
        for e in 0..s.envs.len() {
            match env_rate(uid, e) {
                Some(r) => {
                    let _ = write!(
                        body,
                        "<td style=\"background:{}\">{}</td>",
                        heat(r),
                        percent(Some(r))
                    );
                }
                None => body.push_str("<td class=\"muted\">–</td>"),
            }
        }
        let _ = write!(
            body,
            "<td>{}</td><td>{}</td><td class=\"weight\">{:.4}</td><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
            percent(mean(uid)),
            points.get(&(uid as u32)).map_or("–".into(), |p| format!("{p:.0}")),
            weight(uid),
            m.and_then(|m| m.commit_block).map_or("–".into(), |b| b.to_string()),
            esc(m.map_or("scored", |m| m.status.as_str())),
            esc(m.and_then(|m| m.status_reason.as_deref()).unwrap_or("")),
        );
    }
    body.push_str("</table><p class=\"muted\">Points are recomputed from the stored rates with the default first-commit thresholds; the weight is the stored one validators receive.</p>");
    page("Leaderboard", "/leaderboard", &body, false)
}

/// A miner's latest verification in words (docs/verification.md §3): `passed (match 1.000) at
/// revision 0123456789ab, 2026-12-03T…`, or `not verified`.
fn verification_text(v: Option<&crate::wire::MinerVerification>) -> String {
    match v {
        None => "not verified".into(),
        Some(v) => format!(
            "{}{} at revision {}, {}",
            v.outcome.as_str(),
            v.match_score
                .map_or(String::new(), |m| format!(" (match {m:.3})")),
            v.revision.get(..12).unwrap_or(&v.revision),
            v.checked_at
        ),
    }
}

/// `GET /miners/{uid}`: one miner's rates over the last cycles, the subsets it won, who dominates
/// it, and its latest errors.
pub async fn miner(state: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    let Ok(uid) = path.into_inner().parse::<u16>() else {
        let mut r = empty("Miner", "", "Not a uid.");
        *r.status_mut() = actix_web::http::StatusCode::NOT_FOUND;
        return r;
    };
    let uid32 = i32::from(uid);
    let (scores, miners) = match (
        api::scores::latest_scores(&state).await,
        api::miners::current(&state).await,
    ) {
        (Ok(s), Ok(m)) => (s, m.value.miners.clone()),
        (Err(e), _) | (_, Err(e)) => return failed(e),
    };
    let (history, errors) = match state.public_conn().await {
        Ok(mut conn) => (
            history::rate_history(&mut conn, uid32, RECENT).await,
            history::recent_errors(&mut conn, uid32, 10).await,
        ),
        Err(e) => return failed(e),
    };
    let (Ok(history), Ok(errors)) = (history, errors) else {
        return failed(ApiError::database_unavailable());
    };
    let me = miners.iter().find(|m| m.uid == uid32);
    let mut body = String::new();
    match me {
        Some(m) => {
            let _ = write!(
                body,
                "<table id=\"identity\"><tr><th class=\"l\">hotkey</th><td class=\"l\">{}</td></tr>\
                 <tr><th class=\"l\">repo</th><td class=\"l repo\">{}</td></tr><tr><th class=\"l\">revision</th><td class=\"l\">{}</td></tr>\
                 <tr><th class=\"l\">first commit</th><td>{}</td></tr><tr><th class=\"l\">status</th><td class=\"l\" id=\"status\">{}</td></tr>\
                 <tr><th class=\"l\">reason</th><td class=\"l\">{}</td></tr>\
                 <tr><th class=\"l\">verification</th><td class=\"l\" id=\"verification\">{}</td></tr></table>",
                esc(&m.hotkey),
                esc(m.repo.as_deref().unwrap_or("–")),
                esc(m.revision.as_deref().unwrap_or("–")),
                m.commit_block.map_or("–".into(), |b| b.to_string()),
                esc(&m.status),
                esc(m.status_reason.as_deref().unwrap_or("")),
                esc(&verification_text(m.verification.as_ref())),
            );
        }
        None => body.push_str("<p class=\"muted\">Not in the latest registry snapshot.</p>"),
    }
    body.push_str("<h2>Success rate per environment</h2>");
    let mut per_env: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for p in &history {
        per_env
            .entry(p.env_id.as_str())
            .or_default()
            .push((f64::from(p.cycle_id), p.success_rate));
    }
    if per_env.is_empty() {
        body.push_str("<p class=\"muted\" id=\"no-history\">No scores in the recent cycles.</p>");
    } else {
        let series: Vec<Series> = per_env
            .into_iter()
            .map(|(env, points)| Series {
                name: env.trim_start_matches("metaworld/").into(),
                points,
            })
            .collect();
        let mut cycles: Vec<i32> = history.iter().map(|p| p.cycle_id).collect();
        cycles.dedup();
        let labels: Vec<(f64, String)> = cycles
            .iter()
            .map(|c| (f64::from(*c), format!("cycle {c}")))
            .collect();
        body += &svg::lines(
            "rates",
            &series,
            1.0,
            &|v| format!("{:.0}%", v * 100.0),
            &labels,
        );
    }
    if let Some(scores) = &scores {
        let s = scored(scores, &miners);
        let name = |e: usize| s.envs[e].trim_start_matches("metaworld/").to_string();
        let names = |es: &[usize]| es.iter().map(|e| name(*e)).collect::<Vec<_>>().join(", ");
        body.push_str("<h2>Subsets won</h2>");
        let won: Vec<String> = s
            .outcome
            .iter()
            .flat_map(|o| o.subset_winners.iter())
            .filter(|w| w.winner == Some(u32::from(uid)))
            .map(|w| format!("<li>{}</li>", esc(&names(&w.envs))))
            .collect();
        if won.is_empty() {
            body.push_str("<p id=\"subsets\">None in the latest cycle.</p>");
        } else {
            let _ = write!(body, "<ul id=\"subsets\">{}</ul>", won.join(""));
        }
        body.push_str("<h2>Who dominates you</h2>");
        match s.miners.iter().position(|m| m.uid == u32::from(uid)) {
            Some(me) => {
                let who = pareto::dominators(s.envs.len(), &s.miners, s.episodes, me);
                if who.is_empty() {
                    body.push_str(
                        "<p id=\"dominance\">Nobody: you are on the ε-Pareto frontier.</p>",
                    );
                } else {
                    body.push_str("<ul id=\"dominance\">");
                    for (other, envs) in who {
                        let _ = write!(
                            body,
                            "<li><a href=\"/miners/{other}\">uid {other}</a> dominates you on {} by more than the threshold ε, and is not worse than you by more than ε anywhere.</li>",
                            esc(&names(&envs))
                        );
                    }
                    body.push_str("</ul>");
                }
            }
            None => body.push_str("<p id=\"dominance\">Not scored in the latest cycle.</p>"),
        }
    }
    body.push_str("<h2>Latest errors</h2>");
    if errors.is_empty() {
        body.push_str("<p id=\"errors\" class=\"muted\">None.</p>");
    } else {
        body.push_str("<table id=\"errors\"><tr><th>cycle</th><th class=\"l\">environment</th><th class=\"l\">when</th><th class=\"l\">error</th></tr>");
        for e in errors {
            let text = e
                .result
                .as_ref()
                .and_then(|r| r["error"].as_str())
                .unwrap_or("");
            let _ = write!(
                body,
                "<tr><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
                e.cycle_id,
                esc(&e.env_id),
                e.completed_at.map(crate::wire::timestamp).unwrap_or_default(),
                esc(text),
            );
        }
        body.push_str("</table>");
    }
    page(&format!("Miner {uid}"), "", &body, false)
}

/// The Pareto view's chosen environments (positions in the cycle's env list).
#[derive(Debug, Deserialize)]
pub struct PairQuery {
    /// x-axis env position.
    a: Option<usize>,
    /// y-axis env position.
    b: Option<usize>,
}

/// `GET /pareto?a=&b=`: every miner on two environments, with the 2-D ε-Pareto frontier of that
/// pair (the scoring's own rule) and the stored full frontier marked.
pub async fn pareto(state: web::Data<AppState>, query: web::Query<PairQuery>) -> HttpResponse {
    let (scores, miners) = match (
        api::scores::latest_scores(&state).await,
        api::miners::current(&state).await,
    ) {
        (Ok(s), Ok(m)) => (s, m.value.miners.clone()),
        (Err(e), _) | (_, Err(e)) => return failed(e),
    };
    let Some(scores) = scores else {
        return empty("Pareto", "/pareto", "No completed cycle yet.");
    };
    let s = scored(&scores, &miners);
    if s.envs.len() < 2 {
        return empty(
            "Pareto",
            "/pareto",
            "The latest cycle has fewer than two environments.",
        );
    }
    let a = query.a.filter(|a| *a < s.envs.len()).unwrap_or(0);
    let b = query
        .b
        .filter(|b| *b < s.envs.len() && *b != a)
        .unwrap_or(if a == 0 { 1 } else { 0 });
    let pair: Vec<MinerRates> = s
        .miners
        .iter()
        .map(|m| MinerRates {
            uid: m.uid,
            block: m.block,
            rates: vec![m.rates[a], m.rates[b]],
        })
        .collect();
    let front = pareto::frontier(2, &pair, s.episodes);
    let stored: Vec<u32> =
        serde_json::from_value(scores.pareto_frontier.clone()).unwrap_or_default();
    let points: Vec<Point> = pair
        .iter()
        .map(|m| Point {
            label: m.uid.to_string(),
            x: m.rates[0].unwrap_or(0.0),
            y: m.rates[1].unwrap_or(0.0),
            marked: stored.contains(&m.uid),
            on_frontier: front.contains(&m.uid),
        })
        .collect();
    let select = |name: &str, chosen: usize| {
        let mut out = format!("<select name=\"{name}\">");
        for (i, e) in s.envs.iter().enumerate() {
            let sel = if i == chosen { " selected" } else { "" };
            let _ = write!(out, "<option value=\"{i}\"{sel}>{}</option>", esc(e));
        }
        out + "</select>"
    };
    let mut body = format!(
        "<form method=\"get\" action=\"/pareto\">x {} y {} <button>show</button></form>",
        select("a", a),
        select("b", b)
    );
    body += &svg::scatter("pareto", &points, &s.envs[a], &s.envs[b]);
    let _ = write!(
        body,
        "<p>Frontier of this pair (red, dashed): <span id=\"pair-frontier\">{}</span>. \
         Diamonds: on the stored frontier over all {} environments (<span id=\"full-frontier\">{}</span>).</p>",
        front.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
        s.envs.len(),
        stored.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
    );
    page("Pareto", "/pareto", &body, false)
}

/// `GET /weights`: the top weights of the last cycles and the latest u16 vector.
pub async fn weights(state: web::Data<AppState>) -> HttpResponse {
    let (history, latest) = match state.public_conn().await {
        Ok(mut conn) => (
            history::weights_history(&mut conn, 20).await,
            crate::db::views::weights(&mut conn, None).await,
        ),
        Err(e) => return failed(e),
    };
    let (Ok(history), Ok(latest)) = (history, latest) else {
        return failed(ApiError::database_unavailable());
    };
    let Some(latest) = latest.map(api::weights::body) else {
        return empty("Weights", "/weights", "No weights yet.");
    };
    let now = weight_map(&latest.weights);
    let mut top: Vec<(u32, f64)> = now.iter().map(|(u, w)| (*u, *w)).collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(5);
    let series: Vec<Series> = top
        .iter()
        .map(|(uid, _)| Series {
            name: format!("uid {uid}"),
            points: history
                .iter()
                .map(|h| {
                    (
                        f64::from(h.cycle_id),
                        weight_map(&h.weights).get(uid).copied().unwrap_or(0.0),
                    )
                })
                .collect(),
        })
        .collect();
    let labels: Vec<(f64, String)> = history
        .iter()
        .map(|h| (f64::from(h.cycle_id), format!("cycle {}", h.cycle_id)))
        .collect();
    let mut body = String::from("<h2>Top weights per cycle</h2>");
    body += &svg::lines(
        "weights-history",
        &series,
        1.0,
        &|v| format!("{v:.2}"),
        &labels,
    );
    let _ = write!(
        body,
        "<h2>Latest vector (block {}, cycle {})</h2><table id=\"u16\"><tr><th>uid</th><th>weight</th><th>u16</th></tr>",
        latest.block, latest.cycle_id
    );
    let u16s: scoring::U16Weights =
        serde_json::from_value(latest.weights_u16.clone()).unwrap_or_default();
    for (uid, value) in u16s.uids.iter().zip(&u16s.values) {
        let _ = write!(
            body,
            "<tr><td><a href=\"/miners/{uid}\">{uid}</a></td><td>{:.6}</td><td>{value}</td></tr>",
            now.get(uid).copied().unwrap_or(0.0)
        );
    }
    body.push_str("</table>");
    page("Weights", "/weights", &body, false)
}

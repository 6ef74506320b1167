//! Programs: their loyalty rules and names. Every card shows both (tiers, expiry, the
//! organisation name), so each change starts a publish job per published template, in the
//! change's own transaction, and Google classes are sent again.

use super::ServiceError;
use crate::domain::{Checker, Program, check_text};
use crate::ledger::LoyaltyRules;
use crate::storage::Store;

/// Replaces a program's rules. Tiers keep their ids: a tier sent without one takes the id of
/// the tier of the same name in the current rules, so a client that drops ids renames nothing.
/// The current rules are read in the change's transaction, so two changes cannot both take ids
/// from the same old rules.
pub async fn set_rules(
    store: &Store,
    program_id: &str,
    rules: LoyaltyRules,
) -> Result<Program, ServiceError> {
    let prepare = |current: &LoyaltyRules| {
        let mut rules = rules;
        rules.assign_tier_ids(Some(current));
        rules.validate()?;
        Ok::<_, ServiceError>(rules)
    };
    store.update_program_rules(program_id, prepare).await?
}

/// Renames a program and its organisation.
pub async fn rename(
    store: &Store,
    program_id: &str,
    name: &str,
    organization: &str,
) -> Result<Program, ServiceError> {
    let mut c = Checker::default();
    check_text(&mut c, "name", name, 200);
    check_text(&mut c, "organization_name", organization, 200);
    c.finish()?;
    Ok(store.rename_program(program_id, name, organization).await?)
}

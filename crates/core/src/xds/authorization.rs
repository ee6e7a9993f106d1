//! `istio.security.Authorization` → [`Authorization`].

use mesh_proto::istio::security as xds;
use mesh_proto::istio::security::string_match::MatchType;

use super::{ConversionError, each, ip_net, port};
use crate::address::IpNet;
use crate::authorization::{
    Action, Authorization, Clause, Match, Rule, Scope, ServiceAccountMatch, StringMatch,
};

impl TryFrom<&xds::Authorization> for Authorization {
    type Error = ConversionError;

    fn try_from(a: &xds::Authorization) -> Result<Self, Self::Error> {
        let scope = match xds::Scope::try_from(a.scope) {
            Ok(xds::Scope::Global) => Scope::Global,
            Ok(xds::Scope::Namespace) => Scope::Namespace,
            Ok(xds::Scope::WorkloadSelector) => Scope::WorkloadSelector,
            Err(_) => return Err(unknown_enum("scope", a.scope)),
        };
        let action = match xds::Action::try_from(a.action) {
            Ok(xds::Action::Allow) => Action::Allow,
            Ok(xds::Action::Deny) => Action::Deny,
            Err(_) => return Err(unknown_enum("action", a.action)),
        };
        Ok(Self {
            name: a.name.clone(),
            namespace: a.namespace.clone(),
            scope,
            action,
            rules: each("rules", &a.rules, Rule::try_from)?,
            dry_run: a.dry_run,
        })
    }
}

fn unknown_enum(field: &str, value: i32) -> ConversionError {
    // Rejecting beats guessing: treating an unknown action as ALLOW (the
    // protobuf default) would silently open a DENY policy.
    ConversionError::new(field, format!("unknown value {value}"))
}

impl TryFrom<&xds::Rule> for Rule {
    type Error = ConversionError;

    fn try_from(r: &xds::Rule) -> Result<Self, Self::Error> {
        Ok(Self {
            clauses: each("clauses", &r.clauses, Clause::try_from)?,
        })
    }
}

impl TryFrom<&xds::Clause> for Clause {
    type Error = ConversionError;

    fn try_from(c: &xds::Clause) -> Result<Self, Self::Error> {
        Ok(Self {
            matches: each("matches", &c.matches, Match::try_from)?,
        })
    }
}

impl TryFrom<&xds::Match> for Match {
    type Error = ConversionError;

    fn try_from(m: &xds::Match) -> Result<Self, Self::Error> {
        let strings = |field, items| each(field, items, StringMatch::try_from);
        let nets = |field, items| each(field, items, cidr);
        let ports = |field, items| each(field, items, |p: &u32| port(*p));
        let accounts = |field, items| each(field, items, service_account);
        // Extensions are opaque and ignored.
        Ok(Self {
            namespaces: strings("namespaces", &m.namespaces)?,
            not_namespaces: strings("not_namespaces", &m.not_namespaces)?,
            principals: strings("principals", &m.principals)?,
            not_principals: strings("not_principals", &m.not_principals)?,
            source_ips: nets("source_ips", &m.source_ips)?,
            not_source_ips: nets("not_source_ips", &m.not_source_ips)?,
            destination_ips: nets("destination_ips", &m.destination_ips)?,
            not_destination_ips: nets("not_destination_ips", &m.not_destination_ips)?,
            destination_ports: ports("destination_ports", &m.destination_ports)?,
            not_destination_ports: ports("not_destination_ports", &m.not_destination_ports)?,
            service_accounts: accounts("service_accounts", &m.service_accounts)?,
            not_service_accounts: accounts("not_service_accounts", &m.not_service_accounts)?,
        })
    }
}

fn cidr(a: &xds::Address) -> Result<IpNet, ConversionError> {
    ip_net(&a.address, a.length)
}

fn service_account(sa: &xds::ServiceAccountMatch) -> Result<ServiceAccountMatch, ConversionError> {
    Ok(ServiceAccountMatch {
        namespace: sa.namespace.clone(),
        service_account: sa.service_account.clone(),
    })
}

impl TryFrom<&xds::StringMatch> for StringMatch {
    type Error = ConversionError;

    fn try_from(s: &xds::StringMatch) -> Result<Self, Self::Error> {
        match &s.match_type {
            Some(MatchType::Exact(v)) => Ok(Self::Exact(v.clone())),
            Some(MatchType::Prefix(v)) => Ok(Self::Prefix(v.clone())),
            Some(MatchType::Suffix(v)) => Ok(Self::Suffix(v.clone())),
            Some(MatchType::Presence(())) => Ok(Self::Presence),
            None => Err(ConversionError::new("", "no match type is set")),
        }
    }
}

#[cfg(test)]
mod tests;

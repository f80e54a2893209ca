//! Integration tests on real parts: a kube-apiserver + etcd (started once per run, or the cluster named
//! by `DPS_KUBECONFIG`) and the local engine over HTTPS (one per test). One binary so the control plane is
//! shared by every test.

mod audit_abandon;
mod bad_inputs;
mod chart;
mod chart_crds;
mod chart_engine;
mod cli_export;
mod cli_revoke;
mod controller_deprovision;
mod controller_drift;
mod controller_group;
mod controller_group_ownership;
mod controller_group_revocation;
mod controller_individual;
mod controller_inputs;
mod controller_namespace;
mod controller_rotation;
mod controller_wakes;
mod crds;
mod engine_certificates;
mod engine_connection;
mod engine_hub;
mod engine_registration;
mod engine_routing;
mod engine_sdk;
mod engine_secrets;
mod engine_service;
mod engine_simulator;
mod engine_throttling;
mod engine_wire;
mod examples;
mod failover_faults;
mod faults;
mod gitops_health;
mod hygiene;
mod kustomize;
mod leader_election;
mod least_privilege;
mod operator_metrics;
mod operator_run;
mod rbac;
mod revocation_invariant;
mod support;
mod up_script;

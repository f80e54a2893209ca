//! Integration tests on a real kube-apiserver + etcd (started once per run, or the cluster named by
//! `DPS_KUBECONFIG`). One binary so the control plane is shared by every test.

mod chart;
mod crds;
mod operator_run;
mod support;

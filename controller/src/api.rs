//! The gRPC edge: thin handlers that validate (through `ferry_proto::model`), call the domain
//! modules and map errors. Conversions to wire types live in `convert`.

pub mod control;
pub mod convert;
pub mod worker;

//! Media plumbing shared by every transport and model: no model code, no sockets, no clocks.

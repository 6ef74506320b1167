//! Wallet pass formats. `apple` builds and signs `.pkpass` bundles; Google Wallet objects will sit
//! beside it. Nothing here touches HTTP or SQL.

pub mod apple;

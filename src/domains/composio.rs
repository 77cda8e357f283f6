//! Composio integrations: toolkits, connections, authorize, delete.

"""Exchange (交换): data sources, query, verification (查询核验), bulk, subscriptions."""

# placeholder: replaced by the aggregator implementation

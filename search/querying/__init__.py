"""What shoppers ask: reads of the vector side. Nothing here writes.

similar  nearest products to a product or a vector, in one space's active version; products for result cards
text     free-text search, fused from the text sources
photo    search by photo; warming query models in web processes
"""

"""What the two SQL stores share, written once: the operations whose SQL both dialects speak
(``ops_log``, ``accounts``), over a ``Session`` each store opens on its own connections and a
``Dialect`` naming what their SQL spells differently."""

-- The best SQL shape for the work of pgbench_order.sql (2 lines), as ONE round trip with the
-- product locks taken last: the whole transaction is one compound command (pgbench sends
-- statements joined by \; as a single simple-protocol query string). Inserts first, in one
-- statement (order, items in product-pk order, order.created outbox row, payment row,
-- status-history row, the idempotency record stored completed with its ~610-byte response),
-- then the pk-ordered SELECT ... FOR NO KEY UPDATE (the items' FK checks take KEY SHARE on
-- the products, so FOR UPDATE could deadlock), then the stock UPDATE with the
-- CHECK (stock >= 0) constraint as the guard, then COMMIT. orders_bench.py passes p1 < p2.
\set q1 random(1, 3)
\set q2 random(1, 3)
BEGIN \;
WITH line (product_id, sku, unit_price, quantity) AS (
         VALUES (':p1'::uuid, ':sku1', :price1::numeric, :q1),
                   (':p2'::uuid, ':sku2', :price2::numeric, :q2)),
     new_order AS (
         INSERT INTO orders_order
             (id, client_id, email, status, cancel_reason, total, currency, created_at,
              updated_at, paid_at, cancelled_at, expires_at, event_version)
         VALUES (gen_random_uuid(), ':client_id',
                 'pgb-' || gen_random_uuid() || '@example.com', 'pending_payment', '',
                 :price1 * :q1 + :price2 * :q2, 'USD', now(), now(), NULL, NULL,
                 now() + interval '15 minutes', 1)
         RETURNING id, email, total, expires_at),
     items AS (
         INSERT INTO orders_orderitem
             (id, order_id, product_id, sku, name, unit_price, quantity, line_total)
         SELECT gen_random_uuid(), o.id, l.product_id, l.sku, 'Bench product', l.unit_price,
                l.quantity, l.unit_price * l.quantity
           FROM new_order o CROSS JOIN line l ORDER BY l.product_id),
     event AS (
         INSERT INTO outbox_outboxevent
             (id, type, aggregate_type, aggregate_id, version, occurred_at, correlation_id,
              payload, status, attempts, next_attempt_at, lease_token, lease_expires_at,
              last_error, published_at, created_at)
         SELECT gen_random_uuid(), 'order.created', 'order', o.id, 1, now(),
                md5(random()::text),
                jsonb_build_object(
                  'order_id', o.id, 'client_id', ':client_id', 'email', o.email,
                  'status', 'pending_payment', 'total', o.total::text, 'currency', 'USD',
                  'expires_at', o.expires_at,
                  'items', (SELECT jsonb_agg(jsonb_build_object(
                                     'product_id', l.product_id, 'sku', l.sku,
                                     'quantity', l.quantity,
                                     'unit_price', l.unit_price::text,
                                     'line_total', (l.unit_price * l.quantity)::text)
                                   ORDER BY l.product_id) FROM line l)),
                'pending', 0, now(), NULL, NULL, '', NULL, now()
           FROM new_order o),
     payment AS (
         INSERT INTO payments_payment
             (id, status, provider_payment_id, amount, currency, email, attempts,
              next_attempt_at, lease_token, lease_expires_at, last_error, event_version,
              created_at, updated_at, order_id)
         SELECT gen_random_uuid(), 'requesting', NULL, o.total, 'USD', o.email, 0, now(),
                NULL, NULL, '', 0, now(), now(), o.id
           FROM new_order o),
     history AS (
         INSERT INTO orders_orderstatuschange
             (id, old_status, new_status, event_version, reason, actor_type, actor_id,
              actor_label, correlation_id, created_at, order_id)
         SELECT gen_random_uuid(), '', 'pending_payment', 1, 'order placed', 'api_client',
                ':client_id', 'bench', md5(random()::text), now(), o.id
           FROM new_order o)
INSERT INTO orders_idempotencyrecord
    (id, client_id, key, fingerprint, status, claim_token, locked_until, response_status,
     response_body, response_headers, created_at, expires_at, order_id)
SELECT gen_random_uuid(), ':client_id', gen_random_uuid()::text,
       md5(random()::text) || md5(random()::text), 'completed', gen_random_uuid(), now(), 201,
       convert_to(rpad('{"id":"' || o.id || '"', 610, ' '), 'UTF8'),
       jsonb_build_object('Content-Type', 'application/json',
                          'Location', '/api/v1/orders/' || o.id || '/'),
       now(), now() + interval '24 hours', o.id
  FROM new_order o \;
SELECT id, price, name, is_active, stock
  FROM catalog_product WHERE id IN (':p1', ':p2') ORDER BY id FOR NO KEY UPDATE \;
UPDATE catalog_product
   SET stock = CASE WHEN id = ':p1' THEN stock - :q1 WHEN id = ':p2' THEN stock - :q2 ELSE stock END,
       updated_at = statement_timestamp()
 WHERE id IN (':p1', ':p2') \;
COMMIT;

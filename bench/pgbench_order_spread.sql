-- The spread variant of pgbench_order.sql: 2 lines over 2 distinct products drawn at random
-- from 100 (ids 00000000-0000-4000-8000-000000100000 .. ...100099, skus BENCH-S-100000 ..),
-- all priced -D price=..; little row-lock contention, so this shows the uncontended cost.
\set q1 random(1, 3)
\set q2 random(1, 3)
\set a random(100000, 100099)
\set b 100000 + (:a - 100000 + random(1, 99)) % 100
BEGIN;
SELECT id, sku, name, description, price, stock, is_active, created_at, updated_at
  FROM catalog_product WHERE id IN ('00000000-0000-4000-8000-000000:a', '00000000-0000-4000-8000-000000:b') ORDER BY id FOR UPDATE;
UPDATE catalog_product
   SET stock = CASE WHEN id = '00000000-0000-4000-8000-000000:a' THEN stock - :q1 WHEN id = '00000000-0000-4000-8000-000000:b' THEN stock - :q2
               ELSE stock END,
       updated_at = statement_timestamp()
 WHERE id IN ('00000000-0000-4000-8000-000000:a', '00000000-0000-4000-8000-000000:b');
INSERT INTO orders_idempotencyrecord
    (id, client_id, key, fingerprint, status, claim_token, locked_until,
     response_headers, created_at, expires_at)
VALUES (gen_random_uuid(), ':client_id', gen_random_uuid()::text,
        md5(random()::text) || md5(random()::text), 'in_progress', gen_random_uuid(),
        now() + interval '30 seconds', '{}'::jsonb, now(), now() + interval '24 hours')
ON CONFLICT (client_id, key) DO NOTHING
RETURNING id AS record_id, claim_token \gset
INSERT INTO orders_order
    (id, client_id, email, status, cancel_reason, total, currency, created_at, updated_at,
     paid_at, cancelled_at, expires_at, event_version)
VALUES (gen_random_uuid(), ':client_id', 'pgb-' || gen_random_uuid() || '@example.com',
        'pending_payment', '', :price * :q1 + :price * :q2, 'USD', now(), now(), NULL, NULL,
        now() + interval '15 minutes', 1)
RETURNING id AS order_id, email \gset
INSERT INTO orders_orderitem
    (id, order_id, product_id, sku, name, unit_price, quantity, line_total)
VALUES (gen_random_uuid(), ':order_id', '00000000-0000-4000-8000-000000:a', 'BENCH-S-:a', 'Bench product', :price, :q1,
        :price * :q1),
       (gen_random_uuid(), ':order_id', '00000000-0000-4000-8000-000000:b', 'BENCH-S-:b', 'Bench product', :price, :q2,
        :price * :q2);
INSERT INTO outbox_outboxevent
    (id, type, aggregate_type, aggregate_id, version, occurred_at, correlation_id, payload,
     status, attempts, next_attempt_at, lease_token, lease_expires_at, last_error,
     published_at, created_at)
VALUES (gen_random_uuid(), 'order.created', 'order', ':order_id', 1, now(),
        md5(random()::text),
        jsonb_build_object(
          'order_id', ':order_id', 'client_id', ':client_id', 'email', ':email',
          'status', 'pending_payment', 'total', (:price * :q1 + :price * :q2)::text,
          'currency', 'USD', 'expires_at', now() + interval '15 minutes',
          'items', jsonb_build_array(
            jsonb_build_object('product_id', '00000000-0000-4000-8000-000000:a', 'sku', 'BENCH-S-:a', 'quantity', :q1,
                               'unit_price', ':price', 'line_total', (:price * :q1)::text),
            jsonb_build_object('product_id', '00000000-0000-4000-8000-000000:b', 'sku', 'BENCH-S-:b', 'quantity', :q2,
                               'unit_price', ':price', 'line_total', (:price * :q2)::text))),
        'pending', 0, now(), NULL, NULL, '', NULL, now());
-- The stored response: ~610 bytes of JSON like the service's 2-line order body.
UPDATE orders_idempotencyrecord
   SET status = 'completed', response_status = 201,
       response_body = convert_to(rpad('{"id":":order_id"', 610, ' '), 'UTF8'),
       response_headers = jsonb_build_object('Content-Type', 'application/json',
                                             'Location', '/api/v1/orders/:order_id/'),
       order_id = ':order_id', locked_until = now()
 WHERE id = ':record_id' AND claim_token = ':claim_token' AND status = 'in_progress';
COMMIT;

DROP TABLE amber.item_images;
